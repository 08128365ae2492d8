"""Tables, figures and goal checks from a finished (or partly finished) steering study.

``robosteer study`` writes one JSON file per (task, method, seed) cell. This module reads
them back and answers the study's questions with the numbers it has: target success per task
and method (episodes pooled over seeds, 95% Wilson interval), success kept on the pretraining
tasks, trainable parameters, training time and peak memory, and whether each of the issue's
goals holds on the point estimates and is established (the 95% interval of the difference clears
zero both over evaluation episodes and over training seeds). Cells that are missing are reported
as missing, never filled in.

Usage::

    report = StudyReport.load("runs/study")
    print(report.markdown())
    report.figure().write_html("docs/results_success.html")
    report.static_figure().savefig("docs/results_success.png")   # the same panels, for Markdown
    robosteer study-report runs/study --out docs/results_study.md --html docs/results_success.html \
        --png docs/results_success.png
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from robosteer.files import read_json
from robosteer.intervals import newcombe_interval, seed_bootstrap, wilson_interval
from robosteer.sim.tasks import EVAL_SEED
from robosteer.app.study import BAND_ARMS, HIGHLIGHT, SEEDLESS_METHODS
from robosteer.app.study import STUDY_METHODS as METHOD_ORDER
from robosteer.app.study_layers import layers_markdown


@dataclass(frozen=True)
class Pooled:
    """Successes pooled over seeds (and tasks, for means), with the 95% Wilson interval."""

    successes: int
    episodes: int

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.episodes) if self.episodes else (float("nan"), float("nan"))

    def cell(self) -> str:
        if not self.episodes:
            return "—"
        low, high = self.ci95
        return f"{self.rate:.2f} [{low:.2f}, {high:.2f}] ({self.successes}/{self.episodes})"


@dataclass(frozen=True)
class Goal:
    """One goal of the study: whether the point estimates meet it, and, for success goals, whether the
    difference (``heads`` minus the other method) clears zero in the goal's direction by two 95%
    intervals: Newcombe's on the pooled episodes (evaluation noise of the trained policies) and a
    bootstrap over the seeds of each task (how much another draw of demonstrations and training
    moves it). Established needs both; the second needs three seeds of every task compared."""

    goal: str
    met: bool
    numbers: str
    difference: tuple[float, float] | None = None  # Newcombe 95% interval of the pooled difference
    across_seeds: tuple[float, float] | None = None  # bootstrap 95% interval over seeds within tasks
    measure: str = ""  # success goals: "target" or "kept" (success on the retention tasks)
    versus: str = ""  # success goals: the other method
    rates: tuple[float, float] | None = None  # success goals: the heads method's and the other's pooled rates
    pairs: int = 0  # the (task, seed) pairs compared

    @property
    def established(self) -> str:
        if self.difference is None:
            return "—"
        (low, high), seeds = self.difference, self.across_seeds
        if low <= 0 <= high:
            return "no: interval includes 0"
        if seeds is None:
            return "not measurable yet: a task has fewer than 3 seeds"
        if low > 0:
            return "yes" if seeds[0] > 0 else "no: spread over seeds includes 0"
        return "no: the opposite is" if seeds[1] < 0 else "no: spread over seeds includes 0"

    @property
    def verdict(self) -> str:
        """The established column in a few words, for figure titles: established, not established, or the opposite."""
        return {"yes": "established", "no: the opposite is": "the opposite is established"}.get(
            self.established, "not established")

    def row(self) -> str:
        """The goal as a row of the report's goal tables (goal | met | established | numbers)."""
        return f"| {self.goal} | {'yes' if self.met else 'no'} | {self.established} | {self.numbers} |"


_HIGHLIGHT = HIGHLIGHT
_NAMES = {"lora": "LoRA", "random-heads": "random heads"}


def _read_cells(study_dir: str | Path) -> list[dict]:
    root = Path(study_dir) / "cells"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: {study_dir} is not a study folder (run `robosteer study`)")
    return [read_json(p, "study cell") for p in sorted(root.rglob("seed*.json"))]


def _pool(summaries) -> Pooled:
    return Pooled(sum(int(s["successes"]) for s in summaries), sum(int(s["episodes"]) for s in summaries))


class StudyReport:
    """The cells of one study folder; see the module docstring."""

    def __init__(self, cells: list[dict], matrix: dict | None = None, bands: list[dict] = ()) -> None:
        """``matrix``: the study's planned ``tasks``/``methods``/``seeds`` (``study.json``); else what the cells show.
        ``bands``: cells of the rank-band controls (``heads-<selector>-middle/-bottom``, run as a study of their
        own); their top bands are the study's ``heads-<selector>`` cells."""
        if not cells:
            raise ValueError("the study has no finished cells yet")
        self.band_cells = [c for c in list(cells) + list(bands) if c["method"] in BAND_ARMS]
        self.cells = [c for c in cells if c["method"] not in BAND_ARMS]
        matrix = matrix or {}
        self.tasks = list(matrix.get("tasks") or sorted({c["task"] for c in self.cells}))
        present = ({c["method"] for c in self.cells} | set(matrix.get("methods") or ())) - set(BAND_ARMS)
        self.methods = [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))
        self.seeds = sorted(set(matrix.get("seeds") or ()) | {c["seed"] for c in cells})
        # retention is pooled over the planned retention tasks only (cells may hold more: an earlier protocol)
        self.retention_tasks = list(matrix.get("retention_tasks") or sorted({t for c in cells for t in c["retention"]}))

    @classmethod
    def load(cls, study_dir: str | Path, bands: str | Path | None = None) -> "StudyReport":
        """Read every finished cell under ``study_dir/cells`` (JSON only), and the rank-band study's under
        ``bands/cells``."""
        plan = Path(study_dir) / "study.json"
        matrix = read_json(plan, "study plan") if plan.is_file() else None
        return cls(_read_cells(study_dir), matrix, _read_cells(bands) if bands is not None else [])

    def _cells(self, task: str | None = None, method: str | None = None) -> list[dict]:
        return [c for c in self.cells if (task is None or c["task"] == task) and (method is None or c["method"] == method)]

    def target(self, method: str, task: str | None = None) -> Pooled:
        """Target-task success of a method, pooled over seeds (and over tasks when ``task`` is None)."""
        return _pool([c["target"] for c in self._cells(task, method)])

    def kept(self, cells: list[dict]) -> Pooled:
        """Success on the retention tasks, pooled over ``cells`` and the study's retention tasks."""
        return _pool([c["retention"][t] for c in cells for t in self.retention_tasks if t in c["retention"]])

    def retention(self, method: str) -> Pooled:
        """Success on the pretraining tasks after adapting, pooled over tasks, seeds and retention tasks.

        A seedless method (zero-shot) adapts nothing: every one of its cells carries the same
        evaluation of the base policy (``base_retention.json``), so it is counted once, not once per task."""
        cells = self._cells(method=method)
        return self.kept(cells[:1] if method in SEEDLESS_METHODS else cells)

    def mean_of(self, method: str, key: str) -> float:
        values = [float(c[key]) for c in self._cells(method=method)]
        return sum(values) / len(values) if values else float("nan")

    def missing(self) -> list[tuple[str, str, int]]:
        have = {(c["task"], c["method"], c["seed"]) for c in self.cells}
        # a seedless method (zero-shot) needs one cell per task, whatever its seed
        seedless_done = {(c["task"], c["method"]) for c in self.cells if c["method"] in SEEDLESS_METHODS}
        return [(t, m, s) for t in self.tasks for m in self.methods for s in self.seeds if (t, m, s) not in have
                and not (m in SEEDLESS_METHODS and ((t, m) in seedless_done or s != self.seeds[0]))]

    # --- the questions -------------------------------------------------------------------
    def pairs_of(self, method: str) -> set[tuple[str, int]]:
        """The (task, seed) pairs for which ``method`` has a finished cell."""
        return {(c["task"], c["seed"]) for c in self._cells(method=method)}

    def paired(self, a: str, b: str) -> list[tuple[str, int]]:
        """The (task, seed) pairs for which both methods have a finished cell: goals compare only these."""
        return sorted(self.pairs_of(a) & self.pairs_of(b))

    def _on(self, method: str, pairs) -> list[dict]:
        wanted = set(pairs)
        return [c for c in self._cells(method=method) if (c["task"], c["seed"]) in wanted]

    def goals(self, heads: str = "heads-knn") -> list[Goal]:
        """Each goal on the (task, seed) pairs both methods finished. The goals are declared for kNN-selected heads
        (the default); ``heads="heads-attribution"`` asks the same questions of the other selection."""
        named = {"heads-knn": "heads (kNN)", "heads-activation": "heads (activation patching)",
                 "heads-attribution": "heads (attribution)"}
        if heads not in named:
            raise ValueError(f"the goals' comparisons are defined for {sorted(named)}, got heads={heads!r}")
        who = named[heads]
        short = "heads" if heads == "heads-knn" else who  # the goals' own wording for the default
        out: list[Goal] = []

        def compare(goal: str, a: str, b: str, pool, better, measure: str) -> None:
            pairs = self.paired(a, b)
            if not pairs:
                return
            pa, pb = pool(self._on(a, pairs)), pool(self._on(b, pairs))
            if not (pa.episodes and pb.episodes):
                return
            low, high = newcombe_interval(pa.successes, pa.episodes, pb.successes, pb.episodes)
            # the same comparison pair by pair (same demonstrations, same evaluation seeds): how consistent it is
            rates = [(pool(self._on(a, [p])).rate, pool(self._on(b, [p])).rate) for p in pairs]
            signs = [(x > y) - (x < y) for x, y in rates]
            seeds = seed_bootstrap([x - y for x, y in rates], [task for task, _ in pairs])
            spread = (f"over seeds [{seeds[0]:+.2f}, {seeds[1]:+.2f}]" if seeds
                      else "over seeds: a task has fewer than 3 seeds")
            out.append(Goal(goal, better(pa.rate, pb.rate),
                            f"{pa.rate:.3f} vs {pb.rate:.3f} on {len(pairs)} task/seed pair(s); "
                            f"difference {pa.rate - pb.rate:+.3f} [{low:+.2f}, {high:+.2f}], {spread}; heads "
                            f"ahead on {signs.count(1)}, tied on {signs.count(0)}, behind on {signs.count(-1)}",
                            (low, high), seeds, measure, b, (pa.rate, pb.rate), len(pairs)))

        target = lambda cells: _pool([c["target"] for c in cells])  # noqa: E731
        compare(f"mean target success of {who} >= LoRA r32", heads, "lora", target, lambda x, y: x >= y, "target")
        compare(f"{who} > random heads", heads, "random-heads", target, lambda x, y: x > y, "target")
        for other in ("lora", "full"):
            compare(f"{short} retains more pretraining success than {other}", heads, other, self.kept,
                    lambda x, y: x > y, "kept")
        pairs = self.paired(heads, "lora")
        if pairs:
            mean = lambda cells, key: sum(float(c[key]) for c in cells) / len(cells)  # noqa: E731
            a, b = self._on(heads, pairs), self._on("lora", pairs)
            pa, pb = mean(a, "trainable_params"), mean(b, "trainable_params")
            ta, tb = mean(a, "train_seconds"), mean(b, "train_seconds")
            out.append(Goal(f"{short} trains <= 1/20 of LoRA's parameters in less time", pa <= pb / 20 and ta < tb,
                            f"params ratio {pa / pb:.4f}, time {ta:.0f} s vs {tb:.0f} s on {len(pairs)} "
                            "task/seed pair(s)"))
        return out

    def markdown(self) -> str:
        """The tables and goal checks as Markdown."""
        lines = [f"Seeds: {', '.join(map(str, self.seeds))}. Success = successes / episodes pooled over seeds, "
                 "with the 95% Wilson interval. Every cell runs the same evaluation episodes (seeds "
                 f"{EVAL_SEED:,}+), "
                 "so pooled seeds are new policies on the same scenes: the interval speaks for these scenes, "
                 "and is narrower than one for new scenes would be.", ""] + self._unmatched_note() + self.paper_table() + [
                 "### Target success per task", "",
                 "| task | " + " | ".join(self.methods) + " |", "|---" * (len(self.methods) + 1) + "|"]
        for task in self.tasks:
            lines.append(f"| {task} | " + " | ".join(self.target(m, task).cell() for m in self.methods) + " |")
        lines.append("| **all finished cells** | " + " | ".join(self.target(m).cell() for m in self.methods) + " |")
        lines += self._per_seed_table()
        lines += ["", "### Retention and cost (means over cells)", "",
                  f"| method | success kept on {', '.join(self.retention_tasks)} | trainable params | train s | "
                  "peak RSS MB |",
                  "|---|---|---|---|---|"]
        for m in self.methods:
            params, seconds, rss = (self.mean_of(m, k) for k in ("trainable_params", "train_seconds", "peak_rss_mb"))
            if params != params:  # no finished cell: nothing measured, shown empty like the success cells
                lines.append(f"| {m} | — | — | — | — |")
                continue
            rss_text = "—" if m in SEEDLESS_METHODS else f"{rss:.0f}"  # nothing trained, nothing measured
            lines.append(f"| {m} | {self.retention(m).cell()} | {params:,.0f} | {seconds:.0f} | {rss_text} |")
        lines += ["", "### Goals (each on the task/seed pairs both methods finished)", "",
                  "Met: the point estimates. Established: the success difference (heads minus the other) lies "
                  "above 0 by two 95% intervals: Newcombe's on the pooled counts (evaluation noise; conservative "
                  "for episodes on shared evaluation seeds) and a bootstrap of the per-pair differences over "
                  "the seeds of each task (the spread between draws of demonstrations and training; rough with "
                  "three seeds, and not measured while a task has fewer).", "",
                  "| goal | met | established | numbers |", "|---|---|---|---|"]
        lines += [g.row() for g in self.goals()]
        for selector, name in (("heads-activation", "activation-patching"), ("heads-attribution", "attribution")):
            other = self.goals(selector)
            if other:
                lines += ["", f"### The same comparisons for {name}-selected heads", "",
                          "Not a goal (the goals name kNN selection, the released one); the same tests, so a reader "
                          "can see whether the choice of selection changes the answer.", "",
                          "| comparison | met | established | numbers |", "|---|---|---|---|"] + [g.row() for g in other]
        if self.band_cells:
            from robosteer.app.study_bands import bands_markdown

            lines += bands_markdown(self)
        lines += self._heads_table()
        lines += layers_markdown(self)
        lines += self._machine_time()
        missing = self.missing()
        if missing:
            lines += ["", f"Missing cells ({len(missing)}): " + ", ".join(f"{t}/{m}/seed{s}" for t, m, s in missing)]
        resumed = [c for c in self.cells if c.get("resumed_at_step")]
        if resumed:
            lines += ["", "Cells whose training was resumed after an interruption (train s from the checkpoints, peak "
                      "RSS of the resumed part only): " + ", ".join(f"{c['task']}/{c['method']}/seed{c['seed']} "
                                                                  f"(at step {c['resumed_at_step']})" for c in resumed)]
        return "\n".join(lines) + "\n"

    def best_other_selector(self) -> str | None:
        """Of the selectors other than kNN, the one whose heads have the highest mean target success over all their
        finished cells (one choice for every task, so that no task picks its own winner)."""
        others = [m for m in ("heads-activation", "heads-attribution") if self.target(m).episodes]
        return max(others, key=lambda m: (self.target(m).rate, -others.index(m))) if others else None

    def paper_table(self) -> list[str]:
        """The seed paper's form: per task, zero-shot, LoRA, heads by kNN and by the best other selector."""
        best = self.best_other_selector()
        columns = [m for m in ("zero-shot", "lora", "heads-knn", best) if m is not None and m in self.methods]
        if not {"lora", "heads-knn"} <= set(columns):
            return []
        names = {"zero-shot": "zero-shot", "lora": "LoRA r32", "heads-knn": "heads (kNN)",
                 "heads-activation": "heads (activation patching)", "heads-attribution": "heads (attribution)"}
        lines = ["### Target success per task, in the paper's form", "",
                 "Successes / episodes pooled over seeds, 95% Wilson interval. "
                 + (f"The best other selector is {names[best]}, chosen once by mean target success over all its "
                    "cells, not per task." if best else "No other selector has finished cells yet."), "",
                 "| task | " + " | ".join(names[m] for m in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for task in self.tasks:
            lines.append(f"| {task} | " + " | ".join(self.target(m, task).cell() for m in columns) + " |")
        lines.append("| **mean** | " + " | ".join(self.target(m).cell() for m in columns) + " |")
        return lines + [""]

    def _machine_time(self) -> list[str]:
        """Machine hours: the whole cells' wall time (collection, discovery, training, evaluations) on this
        machine, where the cells recorded it."""
        cells = self.cells + self.band_cells
        timed = [c for c in cells if c.get("cell_seconds")]
        if not timed:
            return []
        hours = sum(float(c["cell_seconds"]) for c in timed) / 3600
        untimed = len(cells) - len(timed)
        return ["", f"Machine time: {hours:.1f} h of wall time over {len(timed)} timed cells"
                + (f" ({untimed} cells ran before cells were timed)" if untimed else "") + "."]

    def _unmatched_note(self) -> list[str]:
        """A warning when the seeded methods' pooled rows cover different (task, seed) cells."""
        seeded = [m for m in self.methods if m not in SEEDLESS_METHODS]
        have = {m: self.pairs_of(m) for m in seeded}
        counts = {m: len(v) for m, v in have.items()}
        if len({frozenset(v) for v in have.values()}) <= 1:
            return []
        return [f"**Methods are pooled over different cells** (finished cells: "
                f"{', '.join(f'{m} {n}' for m, n in counts.items())}): the per-task rows, the all-cells row, the "
                "retention and cost table and the figure compare unequal sets; the goals and the per-seed table "
                "compare like with like.", ""]

    def _per_seed_table(self) -> list[str]:
        """Target successes of each seed's cell (seeded methods only): how far seeds move each method."""
        methods = [m for m in self.methods if m not in SEEDLESS_METHODS]
        if len(self.seeds) < 2 or not methods:
            return []
        lines = ["", "### Target successes per seed (successes / episodes of each cell)", "",
                 "| task | seed | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
        for task in self.tasks:
            for seed in self.seeds:
                cells = {c["method"]: c["target"] for c in self._cells(task) if c["seed"] == seed}
                if any(m in cells for m in methods):
                    lines.append(f"| {task} | {seed} | " + " | ".join(
                        f"{cells[m]['successes']}/{cells[m]['episodes']}" if m in cells else "—" for m in methods) + " |")
        return lines

    def _heads_table(self) -> list[str]:
        """The heads each head method trained, per task and seed, and how many kNN and attribution share."""
        methods = [m for m in self.methods if any(c.get("heads") for c in self._cells(method=m))]
        if not methods:
            return []
        both = {"heads-knn", "heads-attribution"} <= set(methods)
        lines = ["", "### Selected heads (LLM layer L, head H)", "",
                 "| task | seed | " + " | ".join(methods) + (" | kNN ∩ attribution |" if both else " |"),
                 "|---" * (len(methods) + 2 + both) + "|"]
        for task in self.tasks:
            for seed in self.seeds:
                chosen = {c["method"]: c["heads"] for c in self._cells(task) if c["seed"] == seed and c.get("heads")}
                if not chosen:
                    continue
                cells = [" ".join(h.removeprefix("llm.") for h in chosen[m]) if m in chosen else "—" for m in methods]
                if both:
                    knn, attribution = chosen.get("heads-knn"), chosen.get("heads-attribution")
                    cells.append(str(len(set(knn) & set(attribution))) if knn and attribution else "—")
                lines.append(f"| {task} | {seed} | " + " | ".join(cells) + " |")
        return lines

    def headline(self, heads: str = _HIGHLIGHT) -> tuple[str, str]:
        """The figures' title, a finding: ``heads``' target success against LoRA's and whether the difference is
        established (the first goal), then a line with the other success goals, from the same numbers as the table."""
        goals = [g for g in self.goals(heads) if g.rates is not None]
        first = next((g for g in goals if (g.measure, g.versus) == ("target", "lora")), None)
        if first is None:
            return (f"target success of {len(self.methods)} methods on {len(self.tasks)} tasks",
                    f"no task/seed pair that both {heads} and LoRA finished yet: nothing compared")
        (a, b), (low, high) = first.rates, first.difference
        reason = first.established.partition(": ")[2]
        title = (f"{heads} {a:.2f} vs LoRA {b:.2f} mean target success on {first.pairs} task/seed pairs "
                 f"(difference {a - b:+.2f} [{low:+.2f}, {high:+.2f}]): {first.verdict}"
                 + (f" ({reason})" if reason and first.verdict == "not established" else ""))
        rest = [f"{'target' if g.measure == 'target' else 'kept'} {g.rates[0]:.2f} vs "
                f"{_NAMES.get(g.versus, g.versus)} {g.rates[1]:.2f}, {g.verdict}" for g in goals if g is not first]
        return title, f"{heads}: " + " · ".join(rest) if rest else ""

    def _drawn_tasks(self) -> tuple[list[str], str]:
        """The tasks the bar panels draw, and a note naming those left out because every method scored 0 on them."""
        episodes = {t: sum(self.target(m, t).episodes for m in self.methods) for t in self.tasks}
        zero = [t for t in self.tasks if episodes[t] and not any(self.target(m, t).successes for m in self.methods)]
        note = ("not drawn, every method 0 successes: " + ", ".join(f"{t} (0/{episodes[t]} episodes)" for t in zero)
                if zero else "task")
        return [t for t in self.tasks if t not in zero], note

    def _kept_title(self, newline: str) -> str:
        return (f"success kept = success on the pretraining tasks{newline}{', '.join(self.retention_tasks)} after "
                f"adapting{newline}(pooled over cells; zero-shot: the base policy)")

    def figure(self):
        """The plotly figure of the study (``study_figures.success_figure``)."""
        from robosteer.app.study_figures import success_figure

        return success_figure(self)

    def static_figure(self):
        """The same panels as a matplotlib Figure, for a PNG (``study_figures.static_success_figure``)."""
        from robosteer.app.study_figures import static_success_figure

        return static_success_figure(self)


def register(subparsers) -> None:
    p = subparsers.add_parser("study-report", help="tables, goal checks and a plotly figure from a study folder")
    p.add_argument("study_dir")
    p.add_argument("--bands", help="a rank-band study folder (heads-<selector>-middle/-bottom cells) to report beside it")
    p.add_argument("--grid", help="a learning-rate grid folder (robosteer study-grid) whose grid.json to report too")
    p.add_argument("--out", help="write the Markdown here (default: print it)")
    p.add_argument("--html", help="write the interactive success figure here")
    p.add_argument("--png", help="write the same figure as a static PNG here (matplotlib)")
    p.add_argument("--self-contained", action="store_true",
                   help="embed plotly.js in the HTML (one file to send) instead of writing plotly.min.js beside it")
    p.set_defaults(func=_command)


def _command(args) -> int:
    from robosteer.files import atomic_write_text

    report = StudyReport.load(args.study_dir, bands=args.bands)
    text = report.markdown()
    if args.grid:
        from robosteer.app.study_grid import grid_markdown

        text += "\n" + "\n".join(grid_markdown(read_json(Path(args.grid) / "grid.json", "learning-rate grid"))) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    else:
        print(text)
    if args.html:
        from robosteer.viz import save_html

        save_html(report.figure(), args.html, self_contained=args.self_contained)  # opens offline either way
    if args.png:
        from robosteer.files import atomic_write_bytes

        buffer = io.BytesIO()
        report.static_figure().savefig(buffer, format="png", dpi=110, metadata={"Software": None})
        atomic_write_bytes(args.png, buffer.getvalue())
    return 0

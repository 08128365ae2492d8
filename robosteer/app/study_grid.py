"""The study's learning-rate grid: each finetuned method's peak rate, chosen once on a task that is not a target.

Every trained study method (``study.ARMS``) is finetuned at each rate of its family's small grid on the same
demonstrations of ``VALIDATION_TASK`` (one collection, shared through one work folder) and scored closed loop on
the validation seeds (3,000,000 +), never on the evaluation seeds the matrix reports. The rate with the highest
success is the method's; a tie goes to the smaller rate (the smaller change to the base policy). A method whose
best rate is at an edge of what it tried tries one rate beyond that edge (``extend`` rounds), so that no choice is
an artefact of where the grid stopped. The grid's table,
the zero-shot reference and the choice go to ``grid.json``, whose ``lrs`` entry is ``robosteer study``'s ``--lrs``.

Each grid point is a one-cell study (``OUT/lr-{rate}/cells/...``), so the grid resumes point by point.

Usage::

    robosteer study-grid --out runs/grid
    robosteer study --out runs/study --lrs "$(python -c 'import json; print(",".join(json.load(open("runs/grid/grid.json"))["lrs"]))')"
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from robosteer.app.experiment import STEERING_STEPS
from robosteer.app.study import ARMS, STUDY_METHODS, VALIDATION_TASK, StudyConfig, run_cell
from robosteer.config_cli import ConfigArguments, field_default
from robosteer.sim.cameras import VIEWS

log = logging.getLogger(__name__)

TRAINED_METHODS = tuple(m for m in STUDY_METHODS if ARMS[m].train is not None)  # rank bands take their selector's
# which grid a method's rate comes from: its trainer's parameter family
RATE_FAMILY = {"heads": "head_rates", "random-heads": "head_rates", "lora": "lora_rates", "full": "full_rates"}


@dataclass(frozen=True)
class GridConfig:
    """The grid and the settings it shares with the study; each field's help is also ``robosteer study-grid``'s."""

    out_dir: str = field(metadata={"help": "grid folder: grid.json, lr-*/ (one-cell studies), work/"})
    policy: str = field(default="default", metadata={"help": "base policy: 'default' or a checkpoint folder"})
    task: str = field(default=VALIDATION_TASK, metadata={
        "help": "the validation task the rates are chosen on (not one of the study's targets)"})
    methods: tuple[str, ...] = field(default=TRAINED_METHODS, metadata={"help": "finetuned study methods",
                                                                        "choices": TRAINED_METHODS})
    head_rates: tuple[float, ...] = field(default=(2e-3, 6e-3, 2e-2), metadata={
        "help": "peak rates tried for heads-* and random-heads (per-head slices: few scalars, larger steps)"})
    lora_rates: tuple[float, ...] = field(default=(2e-4, 5e-4, 1.5e-3), metadata={
        "help": "peak rates tried for lora and lora-matched (OpenVLA's LoRA default, 5e-4, in the middle)"})
    full_rates: tuple[float, ...] = field(default=(3e-5, 1e-4, 3e-4), metadata={
        "help": "peak rates tried for full finetuning"})
    seed: int = field(default=0, metadata={"help": "study seed of the grid's demonstrations and training"})
    demos: int = field(default=20, metadata={"help": "expert demonstrations to adapt from"})
    top_k: int = field(default=7, metadata={"help": "heads to finetune (as in the study)"})
    steps: int = field(default=STEERING_STEPS, metadata={"help": "finetuning steps (as in the study)"})
    batch_size: int = field(default=field_default(StudyConfig, "batch_size"), metadata={"help": "finetuning batch"})
    min_lr_ratio: float = field(default=field_default(StudyConfig, "min_lr_ratio"), metadata={
        "help": "the cosine schedule's floor, a fraction of the peak (as in the study)"})
    episodes: int = field(default=30, metadata={"help": "validation episodes per grid point"})
    extend: int = field(default=1, metadata={
        "help": "rounds in which a method whose best rate is at an edge of the rates it tried tries one more rate "
                "beyond that edge (at the grid's own ratio); 0: the grid as given"})
    workers: int = field(default=2, metadata={"help": "simulator processes for collection and evaluation"})
    cameras: tuple[str, ...] | None = field(default=None, metadata={"choices": VIEWS, "help":
        "views the policies see (default: the base policy's own)"})

    def __post_init__(self) -> None:
        if self.extend < 0:
            raise ValueError(f"GridConfig.extend must be >= 0, got {self.extend}")
        unknown = [m for m in self.methods if m not in TRAINED_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"GridConfig.methods must be finetuned study methods ({', '.join(TRAINED_METHODS)}), "
                             f"got {list(self.methods)}")
        for name in set(RATE_FAMILY.values()):
            rates = getattr(self, name)
            if not rates or any(not r > 0 for r in rates) or len(set(rates)) != len(rates):
                raise ValueError(f"GridConfig.{name} must be distinct rates > 0, got {list(rates)}")
            object.__setattr__(self, name, tuple(sorted(rates)))
        self.study(self.methods[0], self.rates(self.methods[0])[0])  # the task, seeds, cameras... checked up front

    def rates(self, method: str) -> tuple[float, ...]:
        """The rates ``method`` is tried at (sorted)."""
        return getattr(self, RATE_FAMILY[ARMS[method].train])

    def points(self) -> list[tuple[str, float]]:
        """The grid's (method, rate) points, middle rates first, so a grid cut short has compared every method once."""
        order = lambda rates: sorted(range(len(rates)), key=lambda i: (abs(i - (len(rates) - 1) / 2), i))
        depth = max(len(self.rates(m)) for m in self.methods)
        return [(m, self.rates(m)[i]) for k in range(depth) for m in self.methods
                for i in order(self.rates(m))[k:k + 1]]

    def study(self, method: str | None, rate: float | None) -> StudyConfig:
        """The one-cell study of a grid point (``method`` None: the zero-shot reference), on the validation seeds,
        without retention, in the grid's shared work folder."""
        out = Path(self.out_dir)
        return StudyConfig(out_dir=str(out / ("zero-shot" if method is None else f"lr-{rate:g}")),
                           work_dir=str(out / "work"), policy=self.policy, tasks=(self.task,),
                           methods=("zero-shot",) if method is None else (method,), seeds=(self.seed,),
                           demos=self.demos, top_k=self.top_k, steps=self.steps, batch_size=self.batch_size,
                           lrs=() if method is None else (f"{method}={rate!r}",), min_lr_ratio=self.min_lr_ratio,
                           episodes=self.episodes, retention_tasks=(), evaluation_seeds="validation",
                           workers=self.workers, cameras=self.cameras)


def choose(rows: list[dict]) -> dict[str, float]:
    """{method: rate} from grid rows ``{"method", "lr", "successes", "episodes"}``: the highest success, ties to
    the smaller rate."""
    best: dict[str, tuple[float, float]] = {}
    for row in rows:
        key = (row["successes"] / row["episodes"], -row["lr"])
        if row["method"] not in best or key > best[row["method"]]:
            best[row["method"]] = key
    return {m: -key[1] for m, key in best.items()}


def beyond_edges(rows: list[dict]) -> list[tuple[str, float]]:
    """The (method, rate) points an edge-extension round adds: for each method whose chosen rate (``choose``) is the
    largest (smallest) it tried, one rate beyond at the ratio of its two largest (smallest), to 3 significant digits."""
    out = []
    for method, best in choose(rows).items():
        tried = sorted({r["lr"] for r in rows if r["method"] == method})
        if len(tried) < 2:
            continue
        if best == tried[-1]:
            out.append((method, float(f"{best * tried[-1] / tried[-2]:.3g}")))
        elif best == tried[0]:
            out.append((method, float(f"{best * tried[0] / tried[1]:.3g}")))
    return out


def lrs_flag(chosen: dict[str, float]) -> tuple[str, ...]:
    """``robosteer study --lrs``'s entries for a choice (``"method=rate"``, in the study's method order)."""
    return tuple(f"{m}={chosen[m]!r}" for m in ARMS if m in chosen)


def run_grid(config: GridConfig, progress: bool = True) -> dict:
    """Every grid point (finished ones are read back) and the zero-shot reference; writes and returns grid.json."""
    from tqdm.auto import tqdm

    from robosteer.files import write_json_atomic

    out = Path(config.out_dir)
    write_json_atomic(out / "grid_config.json", asdict(config), newline=False)
    reference = config.study(None, None)
    zero = run_cell(reference, config.task, "zero-shot", config.seed).target
    rows: list[dict] = []

    def run(points: list[tuple[str, float]], label: str) -> None:
        bar = tqdm(points, desc=label, disable=not progress)
        for method, rate in bar:
            bar.set_postfix_str(f"{method} lr {rate:g}")
            t0 = time.perf_counter()
            cell = run_cell(config.study(method, rate), config.task, method, config.seed)
            rows.append({"method": method, "lr": rate, **cell.target, "trainable_params": cell.trainable_params,
                         "train_seconds": cell.train_seconds})
            log.info("grid %s lr %g: %.2f (%.0f s)", method, rate, cell.target["success"], time.perf_counter() - t0)

    run(config.points(), "lr grid")
    for round_ in range(config.extend):
        extra = beyond_edges(rows)
        if not extra:
            break
        run(extra, f"lr grid, beyond the edges ({round_ + 1})")
    chosen = choose(rows)
    grid = {"task": config.task, "evaluation_seeds": "validation", "episodes": config.episodes, "seed": config.seed,
            "zero_shot": zero, "table": sorted(rows, key=lambda r: (list(ARMS).index(r["method"]), r["lr"])),
            "chosen": chosen, "lrs": list(lrs_flag(chosen))}
    write_json_atomic(out / "grid.json", grid, newline=False)
    return grid


def grid_markdown(grid: dict) -> list[str]:
    """grid.json as the report's table: every point's success on the validation seeds, the choice marked."""
    z = grid["zero_shot"]
    lines = ["### The learning-rate grid", "",
             f"Each method's peak rate, chosen once on {grid['task']} (not a target task), study seed {grid['seed']}, "
             f"{grid['episodes']} episodes on the validation seeds (3,000,000 +); the highest success wins, a tie goes "
             f"to the smaller rate; a best rate at an edge of the grid was followed by one rate beyond it. Zero-shot there: {z['successes']}/{z['episodes']}.", "",
             "| method | rate | success (95%) | trainable params | train s | chosen |", "|---|---|---|---|---|---|"]
    for row in grid["table"]:
        low, high = row["ci95"]
        lines.append(f"| {row['method']} | {row['lr']:g} | {row['success']:.2f} [{low:.2f}, {high:.2f}] "
                     f"({row['successes']}/{row['episodes']}) | {row['trainable_params']:,} | "
                     f"{row['train_seconds']:.0f} | {'yes' if grid['chosen'][row['method']] == row['lr'] else ''} |")
    return lines + ["", "`robosteer study --lrs " + ",".join(grid["lrs"]) + "`"]


# every GridConfig field is a flag (defaults, allowed methods and help from the dataclass)
GRID_ARGUMENTS = ConfigArguments(GridConfig, flags={"out_dir": "--out"})


def register(subparsers) -> None:
    p = subparsers.add_parser("study-grid", help="choose each study method's learning rate on validation seeds of "
                                                 "a task that is not a target (resumable)")
    GRID_ARGUMENTS.add_to(p)
    p.set_defaults(func=_grid_command)


def _grid_command(args) -> int:
    grid = run_grid(GRID_ARGUMENTS.build(args))
    z = grid["zero_shot"]
    print(f"{grid['task']} (validation seeds, {grid['episodes']} episodes); zero-shot {z['success']:.2f}")
    for row in grid["table"]:
        mark = "  <- chosen" if grid["chosen"][row["method"]] == row["lr"] else ""
        print(f"  {row['method']:18s} lr {row['lr']:<8g} {row['success']:.2f} "
              f"[{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]{mark}")
    print("robosteer study --lrs " + ",".join(grid["lrs"]))
    return 0

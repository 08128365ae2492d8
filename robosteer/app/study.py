"""The few-shot steering study: held-out tasks x methods x seeds, resumable cell by cell.

For each held-out adaptation task and seed, the same demonstrations feed every method on
the same schedule (seed s collects on expert seeds ``s * demos .. s * demos + demos - 1``, so
the seeds' demonstration sets are disjoint); each finetuned policy is evaluated
on the task (target success) and on the pretraining tasks (what it kept). A cell's
result is one JSON file, written when the cell finishes, so a long study survives
interruption: rerun the same command and finished cells are skipped.

Methods:

- ``zero-shot``: the base policy as it is. It uses no demonstrations and the evaluation
  seeds do not depend on the study seed, so its result is the same for every seed: it is
  one cell per task (run under the first seed), and the base policy's retention is
  measured once per study (``base_retention.json``), not once per cell;
- ``lora``: LoRA r=32, alpha 16, all-linear (OpenVLA's finetuning default);
- ``lora-matched``: LoRA with the rank whose trainable count is closest to ``heads``';
- ``heads-knn`` / ``heads-activation`` / ``heads-attribution``: the top-k heads by that scorer (the released
  kNN selection; activation patching, i.e. causal mediation on the simulator's probes; attribution patching);
- ``random-heads``: as many random heads (the control for the selection);
- ``full``: every parameter.

Every method trains on the same schedule shape (warm-up over a tenth of the steps, cosine to
``min_lr_ratio`` of the peak: the released recipe's) at its own peak rate (``lrs``, chosen once by
``robosteer study-grid`` on validation seeds of a task that is not a target).

Usage::

    robosteer study-grid --out runs/grid                      # -> runs/grid/grid.json, its "lrs"
    robosteer study --out runs/study --lrs heads-knn=0.006,lora=0.0005,...
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from robosteer.app.experiment import STEERING_STEPS
from robosteer.config_cli import ConfigArguments, field_default
from robosteer.sim.cameras import VIEWS
from robosteer.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arm:
    """What one study method does: the finetuning method it trains (``train.strategies.METHODS``; None: the base
    policy as it is) on the heads found by ``selector`` (``circuits.config.METHODS``)."""

    train: str | None
    selector: str = "knn"
    band: str = "top"  # which heads of the selector's ranking: the top k (its selection), or a middle/bottom k

    def __post_init__(self) -> None:
        from robosteer.circuits.config import METHODS as SELECTORS
        from robosteer.train.strategies import METHODS as TRAINERS

        if self.train is not None and self.train not in TRAINERS:
            raise ValueError(f"Arm.train must be None or a finetuning method ({', '.join(TRAINERS)}), "
                             f"got {self.train!r}")
        if self.selector not in SELECTORS:
            raise ValueError(f"Arm.selector must be a head selector ({', '.join(SELECTORS)}), got {self.selector!r}")
        if self.band not in BANDS or (self.band != "top" and self.train != "heads"):
            raise ValueError(f"Arm.band must be one of {BANDS} ('middle'/'bottom' only for heads), got {self.band!r}")


BANDS = ("top", "middle", "bottom")  # rank bands of a selector's score (issue #20: does the score predict benefit?)


def band_heads(ranked: list, k: int, band: str) -> list:
    """The ``k`` heads of a rank band of ``ranked`` (best first): the first k, the k around the median, the last k."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    if not 0 < k <= len(ranked):
        raise ValueError(f"a band of {k} heads needs 1 <= k <= {len(ranked)} ranked heads")
    start = {"top": 0, "middle": (len(ranked) - k) // 2, "bottom": len(ranked) - k}[band]
    return list(ranked[start:start + k])


# The study's methods, each named by what it trains; every cell of a seed also runs discovery (lora-matched sizes its
# rank from the heads, random-heads draws as many). Checked against the two registries by tests/test_study.py.
ARMS: dict[str, Arm] = {
    "zero-shot": Arm(None), "lora": Arm("lora"), "lora-matched": Arm("lora"), "heads-knn": Arm("heads"),
    "heads-activation": Arm("heads", selector="activation"), "heads-attribution": Arm("heads", selector="attribution"),
    "random-heads": Arm("random-heads"), "full": Arm("full"),
}
# Rank-band controls, run on a few tasks beside the matrix (not in its default methods): the top band of each
# selector is the matrix's own heads-<selector> cell (for kNN, the released selection).
BAND_ARMS: dict[str, Arm] = {f"heads-{s}-{band}": Arm("heads", selector=s, band=band)
                             for s in ("knn", "activation", "attribution") for band in BANDS[1:]}
ARMS.update(BAND_ARMS)
STUDY_METHODS = tuple(m for m in ARMS if m not in BAND_ARMS)
HIGHLIGHT = "heads-knn"  # the method under test (the released selection): the report's titles and highlight
ALL_METHODS = tuple(ARMS)
# methods without a seed (no demonstrations, seed-independent evaluation): one cell per task, under the first seed
SEEDLESS_METHODS = tuple(m for m, arm in ARMS.items() if arm.train is None)
# The study asked of the v5 default (issue #20): ten tasks of the held-out split (each at least 0.20 below its base
# zero-shot, docs/default_policy.md), every axis and all three families, with the paper's robustness axes (object
# form, distractors, lighting) and the unseen stack family. v1's matrix (docs/results/matrix) ran the push family
# only: push/distractors, push/paraphrase, push/relational, push/camera_shift, stack/base.
DEFAULT_TASKS = ("lift/novel_form", "lift/lookalikes", "lift/harsh_light", "lift/relational", "place/paraphrase",
                 "place/lighting", "place/far_region", "push/novel_color", "push/paraphrase", "stack/base")
# The learning-rate grid's task: in the held-out split, not a target (a grasping, visual task).
VALIDATION_TASK = "place/novel_color"
# What a finetuned policy keeps: all three pretraining tasks (v1's matrix measured lift/base and push/base only; the
# v1 default placed nothing).
RETENTION_TASKS = ("lift/base", "place/base", "push/base")
EVALUATION_SEEDS = ("evaluation", "validation")  # sim.tasks.EVAL_SEED / VALIDATION_SEED
# Each method's peak rate as `robosteer study-grid` chose it on the v5 default (place/novel_color, validation seeds;
# docs/results/v5-grid/grid.json "lrs", which tests/test_study_grid.py checks these against).
CHOSEN_LRS = ("lora=0.0015", "lora-matched=0.0002", "heads-knn=0.000667", "heads-activation=0.000667",
              "heads-attribution=0.000667", "random-heads=0.000667", "full=0.0001")


@dataclass(frozen=True)
class StudyConfig:
    """The study's matrix and its shared settings; each field's help is also ``robosteer study``'s."""

    out_dir: str = field(metadata={"help": "study folder: study.json, cells/, work/, results.json"})
    policy: str = field(default="default", metadata={"help": "base policy: 'default' or a checkpoint folder"})
    tasks: tuple[str, ...] = field(default=DEFAULT_TASKS, metadata={
        "help": "adaptation tasks: held-out variations on every axis (visual, linguistic, spatial, environment) "
                "and the unseen family"})
    methods: tuple[str, ...] = field(default=STUDY_METHODS, metadata={
        "help": "study methods (heads-<selector>-middle/-bottom: rank-band controls, not in the default matrix)",
        "choices": ALL_METHODS})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={
        "help": "study seeds: training seed and demonstrations (expert seeds seed x demos onwards)"})
    demos: int = field(default=20, metadata={"help": "expert demonstrations to adapt from"})
    top_k: int = field(default=7, metadata={
        "help": "heads to finetune (7: 20/144 of the default policy's 48 LLM heads)"})
    steps: int = field(default=STEERING_STEPS, metadata={"help": "finetuning steps (the same for every method)"})
    batch_size: int = field(default=field_default(TrainConfig, "batch_size"), metadata={"help": "finetuning batch"})
    lr: float = field(default=field_default(TrainConfig, "lr"), metadata={
        "help": "peak finetuning learning rate"})
    lrs: tuple[str, ...] = field(default=CHOSEN_LRS, metadata={
        "help": "per-method peak rates, method=rate, for the methods named instead of --lr (default: study-grid's "
                "choice on the default policy, docs/results/v5-grid/grid.json 'lrs')"})
    min_lr_ratio: float = field(default=0.1, metadata={
        "help": "the cosine schedule's floor, a fraction of the peak (the released recipe: a tenth)"})
    episodes: int = field(default=50, metadata={"help": "evaluation episodes on the target task"})
    retention_tasks: tuple[str, ...] = field(default=RETENTION_TASKS, metadata={
        "help": "pretraining tasks on which what each policy keeps is measured"})
    retention_episodes: int = field(default=20, metadata={"help": "evaluation episodes on each retention task"})
    evaluation_seeds: str = field(default="evaluation", metadata={"choices": EVALUATION_SEEDS, "help":
        "which task instances score the policies: the evaluation seeds (1,000,000 +), or the validation seeds "
        "(3,000,000 +) that choices such as the learning-rate grid are made on"})
    workers: int = field(default=2, metadata={"help": "simulator processes for collection and evaluation"})
    work_dir: str | None = field(default=None, metadata={"help":
        "folder of the cells' demonstrations, discovered heads and training runs (default: OUT/work); studies that "
        "share it reuse one collection of each task and seed"})
    cameras: tuple[str, ...] | None = field(default=None, metadata={"choices": VIEWS, "help":
        "views the policies see, main first: the demonstrations, probes and evaluations (default: the base "
        "policy's own views, agentview,wrist for a two-view policy)"})

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown:
            raise ValueError(f"unknown study method(s) {unknown}; known: {ALL_METHODS}")
        from robosteer.sim.tasks import Task

        # canonical names ("push" -> "push/base"): cells, study.json and the report's retention filter must agree
        for name in ("tasks", "retention_tasks"):
            object.__setattr__(self, name, tuple(str(Task.parse(t)) for t in getattr(self, name)))
        if not self.seeds or self.demos < 1 or self.episodes < 1:
            raise ValueError("a study needs seeds, demos >= 1 and episodes >= 1")
        if self.evaluation_seeds not in EVALUATION_SEEDS:
            raise ValueError(f"StudyConfig.evaluation_seeds must be one of {EVALUATION_SEEDS}, "
                             f"got {self.evaluation_seeds!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"StudyConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        self.method_lrs()  # malformed --lrs entries fail here, before anything runs
        from robosteer.sim.tasks import EVAL_SEED

        if min(self.seeds) < 0 or self.demo_seed(max(self.seeds)) + self.demos > EVAL_SEED:
            raise ValueError(f"study seeds must be >= 0 and keep the demonstration seeds (seed x demos onwards) below "
                             f"the evaluation seeds ({EVAL_SEED:,}); got seeds {self.seeds} with {self.demos} demos")
        if self.cameras is not None:
            from robosteer.sim.cameras import check_cameras

            object.__setattr__(self, "cameras", check_cameras(self.cameras, "StudyConfig.cameras"))

    def method_lrs(self) -> dict[str, float]:
        """``lrs`` as {method: rate}; a method it does not name trains at ``lr`` (see ``lr_for``)."""
        rates: dict[str, float] = {}
        for entry in self.lrs:
            method, sep, value = entry.partition("=")
            method = method.strip()
            try:
                rate = float(value) if sep else float("nan")
            except ValueError:
                rate = float("nan")
            if method not in ALL_METHODS or ARMS[method].train is None:
                trained = [m for m, arm in ARMS.items() if arm.train is not None]
                raise ValueError(f"StudyConfig.lrs entry {entry!r}: {method!r} is not a finetuned study method "
                                 f"({', '.join(trained)})")
            if not rate > 0:
                raise ValueError(f"StudyConfig.lrs entry {entry!r}: expected method=rate with a rate > 0")
            if method in rates:
                raise ValueError(f"StudyConfig.lrs names {method!r} twice")
            rates[method] = rate
        return rates

    def lr_for(self, method: str) -> float:
        """The peak learning rate ``method`` trains at: its ``lrs`` entry, else (a rank band) its selector's
        heads-<selector> entry, else ``lr``."""
        rates, arm = self.method_lrs(), ARMS[method]
        if method not in rates and arm.band != "top":
            method = f"heads-{arm.selector}"
        return rates.get(method, self.lr)

    def eval_seed(self) -> int:
        """The first task-instance seed the policies are scored on (``evaluation_seeds``)."""
        from robosteer.sim.tasks import EVAL_SEED, VALIDATION_SEED

        return EVAL_SEED if self.evaluation_seeds == "evaluation" else VALIDATION_SEED

    def work_root(self) -> Path:
        """Where demonstrations, discovered heads and training runs go: ``work_dir``, else OUT/work."""
        return Path(self.work_dir) if self.work_dir is not None else Path(self.out_dir) / "work"

    def views(self) -> tuple[str, ...]:
        """The cameras of every collection and evaluation: ``cameras``, checked against the base policy's
        ``n_views``, else the policy's own (``app.policy.policy_cameras``; read from its config.json)."""
        from robosteer.app.policy import policy_cameras

        return policy_cameras(self.policy, self.cameras)

    def demo_seed(self, seed: int) -> int:
        """The first expert seed of a study seed's demonstrations (``experiment.first_demo_seed``)."""
        from robosteer.app.experiment import first_demo_seed

        return first_demo_seed(seed, self.demos)


@dataclass
class CellResult:
    task: str
    method: str
    seed: int
    target: dict  # {"success", "ci95", "successes", "episodes"}
    retention: dict = field(default_factory=dict)  # pretraining task -> same
    trainable_params: int = 0
    train_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    heads: list[str] = field(default_factory=list)
    heads_score: float | None = None  # the trained heads' mean score under the cell's selector column (heads methods)
    score_column: str = ""  # that column (e.g. "knn", "activation:visual")
    settings: dict = field(default_factory=dict)
    resumed_at_step: int = 0  # training continued an interrupted run: train_seconds from checkpoints, peak partial
    cell_seconds: float = 0.0  # the whole cell's wall time (collection, discovery, training, evaluations); 0: not timed


def _summary(result) -> dict:
    low, high = result.ci95
    return {"success": result.success_rate, "ci95": [low, high], "successes": result.successes, "episodes": result.n}


def lora_matched_rank(vla, n_params: int) -> int:
    """The LoRA rank (all-linear) whose trainable count is closest to ``n_params``."""
    from torch import nn

    from robosteer.train.strategies import all_linear_targets

    modules = dict(vla.named_modules())
    per_rank = sum(m.in_features + m.out_features for name in all_linear_targets(vla)
                   for m in [modules[name]] if isinstance(m, nn.Linear))
    return max(1, round(n_params / per_rank))


def cell_path(config: StudyConfig, task: str, method: str, seed: int) -> Path:
    return Path(config.out_dir) / "cells" / task.replace("/", "_") / method / f"seed{seed}.json"


def run_cell(config: StudyConfig, task: str, method: str, seed: int) -> CellResult:
    """Run one (task, method, seed) cell, or read it back if it already finished."""
    from robosteer.app.experiment import evaluate_policy
    from robosteer.files import read_json, write_json_atomic

    path = cell_path(config, task, method, seed)
    if path.is_file():
        return CellResult(**read_json(path, "study cell"))
    t0 = time.perf_counter()
    cell = CellResult(task, method, seed, target={}, settings={"demos": 0})
    views = config.views()  # a mismatch with the base policy stops the cell before anything is collected
    policy = config.policy if method in SEEDLESS_METHODS else _adapt(config, cell, views)
    seed0 = config.eval_seed()
    cell.target = _summary(evaluate_policy(policy, [task], config.episodes, config.workers, cameras=views,
                                           seed=seed0)[task])
    if not config.retention_tasks:
        cell.retention = {}
    elif policy == config.policy:  # the base policy: measured once per study
        cell.retention = base_retention(config, list(config.retention_tasks))
    else:
        kept = evaluate_policy(policy, list(config.retention_tasks), config.retention_episodes, config.workers,
                               cameras=views, seed=seed0)
        cell.retention = {t: _summary(r) for t, r in kept.items()}
    cell.cell_seconds = time.perf_counter() - t0
    write_json_atomic(path, asdict(cell), newline=False)
    return cell


def recorded_settings(train: TrainConfig, lora, warmup_fraction: float) -> dict:
    """A finetuned cell's ``settings``: the schedule and LoRA numbers it trained with, under the names (and in the
    order) the committed cells record them (docs/results/matrix; its cells ran before ``min_lr_ratio``, at 0)."""
    return {"steps": train.steps, "batch_size": train.batch_size, "lr": train.lr, "warmup_fraction": warmup_fraction,
            "schedule": train.schedule, "betas": train.betas, "label_smoothing": train.label_smoothing,
            "seed": train.seed, "lora_r": lora.r, "lora_alpha": lora.alpha, "min_lr_ratio": train.min_lr_ratio}


def _adapt(config: StudyConfig, cell: CellResult, views: tuple[str, ...]) -> str:
    """Collect the cell's demonstrations (seen by ``views``), select heads, finetune; fills ``cell``'s cost fields;
    the policy's path."""
    from robosteer.app.experiment import WARMUP_FRACTION, collect_demos, finetune, steering_config, token_actions
    from robosteer.app.sim_probes import discover_in_sim
    from robosteer.circuits.config import DiscoverConfig
    from robosteer.models import load_vla
    from robosteer.train.strategies import LoraSettings

    task, method, seed = cell.task, cell.method, cell.seed
    arm = ARMS[method]
    work = config.work_root() / task.replace("/", "_") / f"seed{seed}"
    rate = config.lr_for(method)
    # one training folder per rate: a run resumed with another rate must not continue this one's checkpoints
    train = steering_config(work / f"{method}-lr{rate:g}", steps=config.steps, batch_size=config.batch_size, lr=rate,
                            seed=seed, action_tokens=token_actions(config.policy), min_lr_ratio=config.min_lr_ratio)
    lora = LoraSettings()
    first = config.demo_seed(seed)
    cell.settings = {**recorded_settings(train, lora, WARMUP_FRACTION), "demos": config.demos,
                     "demo_seeds": [first, first + config.demos - 1]}
    demos = collect_demos(task, config.demos, work / "demos", seed=first, workers=config.workers, cameras=views)
    base = load_vla(config.policy)
    discovery = DiscoverConfig(method=arm.selector, top_k=config.top_k, seed=seed)
    found = discover_in_sim(base, demos, discovery, out=work / f"heads-{arm.selector}")
    mask = found.mask
    if arm.band != "top":
        from robosteer.masks import HeadMask

        llm = [h for h in found.scores.top(None, found.column) if h.tower == "llm"]
        mask = HeadMask.from_heads(band_heads(llm, len(found.mask), arm.band), base.head_layout)
    if method == "lora-matched":
        # heads trains the query rows and output-projection columns of each selected LLM head
        llm = base.tower_modules()["llm"]
        rank = lora_matched_rank(base, len(found.mask) * 2 * llm.d_model * llm.head_dim)
        # alpha/r = 1/2 as in r32/a16 where the rank allows; alpha is a whole number >= 1, so rank 1 gets alpha 1
        lora = replace(lora, r=rank, alpha=max(1, rank // 2))
        cell.settings.update(lora_r=lora.r, lora_alpha=lora.alpha)
    result = finetune(config.policy, demos, arm.train, train, mask=mask, lora=lora)
    cell.trainable_params, cell.train_seconds, cell.peak_rss_mb = (result.trainable_params, result.train_seconds,
                                                                  result.peak_rss_mb)
    cell.heads, cell.resumed_at_step = result.heads, result.resumed_at_step
    if result.heads:  # the trained heads' score under the selector (random heads: under kNN), for the band question
        values = dict(zip(map(str, found.scores.heads), found.scores.values(found.column)))
        scored = [float(values[h]) for h in result.heads if h in values]
        cell.heads_score = sum(scored) / len(scored) if scored else None
        cell.score_column = found.column
    return str(result.policy)


def base_retention(config: StudyConfig, pretrain: list[str]) -> dict:
    """The base policy's success on the pretraining tasks, measured once per study and kept in ``base_retention.json``."""
    from robosteer.app.experiment import evaluate_policy
    from robosteer.files import read_json, write_json_atomic

    path = Path(config.out_dir) / "base_retention.json"
    key = {"policy": config.policy, "tasks": pretrain, "episodes": config.retention_episodes,
           "evaluation_seeds": config.evaluation_seeds}
    if path.is_file():
        saved = read_json(path, "base retention")
        was = saved.get("key", {})
        same = (was.get("policy"), was.get("episodes"), was.get("evaluation_seeds", "evaluation")) == \
            (config.policy, config.retention_episodes, config.evaluation_seeds)
        if same and set(pretrain) <= set(saved["retention"]):  # measured on these tasks (and maybe more)
            return {t: saved["retention"][t] for t in pretrain}
        log.warning("%s was measured with other settings (%s); measuring again", path, saved.get("key"))
    kept = evaluate_policy(config.policy, pretrain, config.retention_episodes, config.workers, cameras=config.views(),
                           seed=config.eval_seed())
    retention = {t: _summary(r) for t, r in kept.items()}
    write_json_atomic(path, {"key": key, "retention": retention}, newline=False)
    return retention


def study_cells(config: StudyConfig) -> list[tuple[str, str, int]]:
    """The (task, method, seed) cells of the matrix; ``zero-shot`` only under the first seed (it has no seed)."""
    return [(t, m, s) for s in config.seeds for t in config.tasks for m in config.methods
            if m not in SEEDLESS_METHODS or s == config.seeds[0]]


def run_study(config: StudyConfig, progress: bool = True) -> list[CellResult]:
    """Every cell of the matrix (finished cells are read back); results also gathered in ``results.json``."""
    from tqdm.auto import tqdm

    from robosteer.files import write_json_atomic

    cells = study_cells(config)
    # the planned matrix, so that a report on a partly finished study lists every cell still missing
    write_json_atomic(Path(config.out_dir) / "study.json", asdict(config), newline=False)
    results = []
    bar = tqdm(cells, desc="study", disable=not progress)
    for task, method, seed in bar:
        bar.set_postfix_str(f"{task} {method} seed {seed}")
        t0 = time.perf_counter()
        results.append(run_cell(config, task, method, seed))
        log.info("cell %s / %s / seed %d: target %.2f (%.0f s)", task, method, seed, results[-1].target["success"],
                 time.perf_counter() - t0)
    write_json_atomic(Path(config.out_dir) / "results.json",
                      {"config": asdict(config), "cells": [asdict(c) for c in results]}, newline=False)
    return results


# every StudyConfig field is a flag (defaults, allowed methods and help from the dataclass)
STUDY_ARGUMENTS = ConfigArguments(StudyConfig, flags={"out_dir": "--out"})


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="the few-shot steering study: held-out tasks x methods x seeds (resumable)")
    STUDY_ARGUMENTS.add_to(p)
    p.set_defaults(func=_study_command)


def _study_command(args) -> int:
    config = STUDY_ARGUMENTS.build(args)
    for cell in run_study(config):
        t = cell.target
        print(f"{cell.task:20s} {cell.method:18s} seed {cell.seed}: {t['success']:.2f} "
              f"[{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]  params {cell.trainable_params:,}")
    return 0

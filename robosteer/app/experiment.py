"""One few-shot steering experiment: demonstrations of a task, heads found, methods finetuned, all evaluated.

The main example (``examples/franka_finetune.py``) and the study runner share these
steps, so that every method sees the same demonstrations, loop, schedule, step count
and evaluation seeds:

1. ``collect_demos``: expert demonstrations of the adaptation task (collection seeds);
2. ``discover`` (``robosteer.circuits.discover``): score heads and select the top k;
3. ``finetune``: train one method (heads, lora, random-heads, full) from the same base,
   recording trainable parameters, wall time and peak memory; writes a ``policy.json``;
4. ``evaluate_policy``: closed-loop success on evaluation seeds, with 95% Wilson intervals.

Usage::

    demos = collect_demos("lift/novel_color", 20, out="runs/x/demos")
    cell = finetune("default", demos, "heads", FinetuneSettings(), out="runs/x/heads", mask=mask)
    result = evaluate_policy(cell.policy, ["lift/novel_color"], episodes=50)
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FINETUNE_METHODS = ("heads", "lora", "random-heads", "full")


@dataclass(frozen=True)
class FinetuneSettings:
    """One schedule for every method (the comparison is fair only if these are shared)."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-4
    warmup_fraction: float = 0.1  # linear warm-up over this fraction of the steps
    schedule: str = "cosine"
    betas: tuple[float, float] = (0.9, 0.95)
    label_smoothing: float = 1.0
    seed: int = 0
    lora_r: int = 32
    lora_alpha: int = 16

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("steps, batch_size and lr must be positive")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


@dataclass
class FinetuneResult:
    method: str
    policy: Path  # policy.json: base + adapter (or a full checkpoint)
    trainable_params: int
    train_seconds: float  # wall time of the training call; after a resume, the checkpoints' step time in all
    peak_rss_mb: float  # peak resident memory during training (Linux: of this run only; elsewhere: process peak)
    final_loss: float
    heads: list[str] = field(default_factory=list)
    resumed_at_step: int = 0  # > 0: the run continued an interrupted one, so peak_rss_mb covers the last part only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["policy"] = str(self.policy)
        return d


def first_demo_seed(seed: int, demos: int) -> int:
    """First expert seed of run seed ``seed``'s ``demos`` demonstrations: disjoint scenes per seed (seed 1 does not
    reuse 19 of seed 0's 20); the study and the main job both collect this way."""
    return seed * demos


def collect_demos(task: str, episodes: int, out: str | Path, seed: int = 0, workers: int = 2, image_size: int = 64):
    """Expert demonstrations of ``task`` on expert seeds ``seed .. seed + episodes - 1``; a complete folder already
    at ``out`` is reused if it was collected with these settings, and refused (ValueError) if not."""
    from robosteer.sim.collect import CollectConfig, collect
    from robosteer.data.dataset import DemoDataset

    out = Path(out)
    config = CollectConfig(tasks=(task,), episodes=episodes, seed=seed, workers=workers, image_size=image_size)
    if not (out / "meta.json").is_file():
        report = collect(config, out)
        log.info("demonstrations: %s", report.summary())
    demos = DemoDataset(out)
    was = demos.meta.get("collect_config", {})
    want = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items() if k != "workers"}
    differ = "; ".join(f"{k}: {was.get(k)} there, {v} wanted" for k, v in want.items() if was.get(k) != v)
    if differ:
        raise ValueError(f"{out} holds demonstrations collected with other settings ({differ}); remove it or choose "
                         "another folder")
    return demos


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux), so the next reading covers one run only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb(since_reset: bool) -> float:
    """Peak resident memory in MB: since ``_reset_peak_rss`` on Linux, else of the whole process so far."""
    if since_reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def finetune(base: str | Path, demos, method: str, settings: FinetuneSettings, out: str | Path,
             mask=None) -> FinetuneResult:
    """Finetune ``base`` on ``demos`` with ``method``; resumes an interrupted run; returns where the policy is."""
    import torch

    from robosteer.models import load_vla
    from robosteer.app.policy import write_policy_file
    from robosteer.train.config import TrainConfig
    from robosteer.train.loop import train
    from robosteer.train.strategies import LoraSettings, count_trainable, make_strategy

    if method not in FINETUNE_METHODS:
        raise ValueError(f"unknown method {method!r}; known: {FINETUNE_METHODS}")
    out = Path(out)
    vla = load_vla(base, dtype=torch.float32)
    unnorm_key = next(iter(vla.config.norm_stats))
    strategy = make_strategy(method, mask=mask, seed=settings.seed,
                             lora=LoraSettings(r=settings.lora_r, alpha=settings.lora_alpha))
    config = TrainConfig(out_dir=str(out), steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                         schedule=settings.schedule, warmup_steps=int(settings.warmup_fraction * settings.steps), betas=settings.betas,
                         label_smoothing=settings.label_smoothing, seed=settings.seed, augment=True,
                         augment_crop_scale=1.0, augment_hue=0.0, unnorm_key=unnorm_key,
                         ckpt_every=max(50, settings.steps // 4), log_every=max(1, settings.steps // 20), progress=False)
    per_run = _reset_peak_rss()
    t0 = time.perf_counter()
    result = train(vla, demos, strategy, config)
    seconds = time.perf_counter() - t0
    peak = _peak_rss_mb(per_run)
    if result.start_step > 0:  # this call's wall time misses the steps run before the interruption
        log.warning("%s resumed at step %d: training time from the checkpoints (%.0f s), peak memory of the resumed "
                    "part only", out, result.start_step, result.elapsed_s)
        seconds = result.elapsed_s
    n_trainable = count_trainable(vla)
    if method == "full":
        spec = write_policy_file(out / "policy.json", base=result.output)
    else:
        spec = write_policy_file(out / "policy.json", base=base, adapter=result.output)
    heads = [str(h) for h in strategy.mask.heads] if hasattr(strategy, "mask") else []
    return FinetuneResult(method, spec, int(n_trainable), seconds, peak, float(result.loss), heads,
                          resumed_at_step=result.start_step)


def evaluate_policy(policy: str | Path, tasks, episodes: int, workers: int = 2, image_size: int = 64, seed: int | None = None):
    """Closed-loop success of a policy (``"default"``, a checkpoint, or a ``policy.json``) on each task."""
    from robosteer.sim.collect import measure_policy
    from robosteer.sim.env import SimConfig
    from robosteer.sim.tasks import EVAL_SEED

    return measure_policy(str(policy), list(tasks), episodes=episodes, seed=EVAL_SEED if seed is None else seed,
                          workers=workers, config=SimConfig(image_size=image_size), progress=False)

"""One few-shot steering experiment: demonstrations of a task, heads found, methods finetuned, all evaluated.

The main example (``examples/franka_finetune.py``) and the study runner share these
steps, so that every method sees the same demonstrations, loop, schedule, step count
and evaluation seeds:

1. ``collect_demos``: expert demonstrations of the adaptation task (collection seeds);
2. ``discover`` (``robosteer.circuits.discover``): score heads and select the top k;
3. ``finetune``: train one method (``train.strategies.METHODS``: heads, lora, full, random-heads)
   from the same base on the same ``steering_config`` schedule, recording trainable parameters,
   wall time and peak memory; writes a ``policy.json``;
4. ``evaluate_policy``: closed-loop success on evaluation seeds, with 95% Wilson intervals.

The camera views follow the base policy: ``policy_cameras(base)`` (``app.policy``) names the views it takes
(the agentview alone, or agentview and wrist for a two-view policy), the demonstrations are collected in
them (``collect_demos(..., cameras=)``), discovery's probes render the demonstrations' views, and
``evaluate_policy`` renders a policy's own views unless told others.

Usage::

    demos = collect_demos("lift/novel_color", 20, out="runs/x/demos", cameras=policy_cameras("default"))
    cell = finetune("default", demos, "heads", steering_config("runs/x/heads"), mask=mask)
    cell = finetune("default", demos, "lora", steering_config("runs/x/lora", steps=300), lora=LoraSettings(r=8))
    result = evaluate_policy(cell.policy, ["lift/novel_color"], episodes=50)
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robosteer.train.config import TrainConfig
    from robosteer.train.strategies import LoraSettings

log = logging.getLogger(__name__)

STEERING_STEPS = 300  # finetuning steps of the study and the main example (the same for every method)
WARMUP_FRACTION = 0.1  # the steering schedule warms up linearly over this fraction of the steps


def steering_config(out_dir: str | Path, steps: int = STEERING_STEPS, warmup_fraction: float = WARMUP_FRACTION,
                    action_tokens: bool = True, **changes: Any) -> TrainConfig:
    """``steering_config("runs/x/heads", steps=300, seed=1)`` -> the ``TrainConfig`` every method trains on.

    The comparison is fair only if every method shares it: cosine schedule with warm-up over
    ``warmup_fraction`` of the steps, AdamW betas (0.9, 0.95), label smoothing of one action bin (none for a
    policy with continuous actions: ``action_tokens=False``, see :func:`token_actions`),
    augmentation without crop or hue shift (object positions and colours name the target), a
    checkpoint every quarter (at least 50 steps), a metrics row every twentieth; otherwise
    ``TrainConfig``'s defaults (batch 16, lr 5e-4), which ``changes`` override (``batch_size=``, ``lr=``,
    ``seed=``). ``unnorm_key`` left None: ``finetune`` takes the base policy's first dataset statistics.
    """
    from robosteer.train.config import TrainConfig

    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    config = TrainConfig(out_dir=str(out_dir), steps=steps, schedule="cosine",
                         warmup_steps=int(warmup_fraction * steps), betas=(0.9, 0.95),
                         label_smoothing=1.0 if action_tokens else 0.0,
                         augment=True, augment_crop_scale=1.0, augment_hue=0.0, ckpt_every=max(50, steps // 4),
                         log_every=max(1, steps // 20), progress=False)
    return config.replace(**changes) if changes else config


def token_actions(policy: str | Path) -> bool:
    """Whether ``policy`` (``"default"``, a folder, a ``policy.json``) predicts 256-bin action tokens, whose
    targets ``steering_config`` smooths, rather than continuous actions through a regression head."""
    from robosteer.app.policy import policy_config

    config = policy_config(policy)
    return config is None or not config.parallel_decoding


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


def write_run_policy(out: str | Path, method: str, base: str | Path, output: str | Path) -> Path:
    """``out``/policy.json of a finished training run: the trained model itself (``full``), else ``base`` plus the
    adapter at ``output``. Used by ``finetune`` and ``robosteer finetune``."""
    from robosteer.app.policy import write_policy_file

    if method == "full":
        return write_policy_file(Path(out) / "policy.json", base=output)
    return write_policy_file(Path(out) / "policy.json", base=base, adapter=output)


def first_demo_seed(seed: int, demos: int) -> int:
    """First expert seed of run seed ``seed``'s ``demos`` demonstrations: disjoint scenes per seed (seed 1 does not
    reuse 19 of seed 0's 20); the study and the main job both collect this way."""
    return seed * demos


def collect_demos(task: str, episodes: int, out: str | Path, seed: int = 0, workers: int = 2, image_size: int = 64,
                  cameras: tuple[str, ...] | None = None):
    """Expert demonstrations of ``task`` on expert seeds ``seed .. seed + episodes - 1``, seen by ``cameras`` (the
    views of the policy they will train, ``policy_cameras(base)``; None: the agentview alone); a complete folder
    already at ``out`` is reused if it was collected with these settings, and refused (ValueError) if not."""
    from robosteer.sim.collect import CollectConfig, collect
    from robosteer.data.dataset import DemoDataset

    out = Path(out)
    config = CollectConfig(tasks=(task,), episodes=episodes, seed=seed, workers=workers, image_size=image_size,
                           cameras=cameras)
    if not (out / "meta.json").is_file():
        report = collect(config, out)
        log.info("demonstrations: %s", report.summary())
    demos = DemoDataset(out)
    was = demos.meta.get("collect_config", {})
    want = {k: list(v) if isinstance(v, tuple) else v for k, v in config.settings().items() if k != "workers"}
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


def finetune(base: str | Path, demos, method: str, config: TrainConfig, mask=None,
             lora: LoraSettings | None = None) -> FinetuneResult:
    """Finetune ``base`` on ``demos`` with ``method`` (``TrainConfig`` ``config``, e.g. ``steering_config(out)``;
    ``lora``: ``LoraSettings`` for the lora method, default OpenVLA's); resumes an interrupted run; returns where
    the policy is (``config.out_dir``/policy.json)."""
    import torch

    from robosteer.models import load_vla
    from robosteer.train.loop import train
    from robosteer.train.strategies import METHODS, LoraSettings, count_trainable, make_strategy

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    out = Path(config.out_dir)
    vla = load_vla(base, dtype=torch.float32)
    if config.unnorm_key is None:
        config = config.replace(unnorm_key=next(iter(vla.config.norm_stats)))
    strategy = make_strategy(method, mask=mask, seed=config.seed, lora=lora or LoraSettings())
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
    spec = write_run_policy(out, method, base, result.output)
    heads = [str(h) for h in strategy.mask.heads] if hasattr(strategy, "mask") else []
    return FinetuneResult(method, spec, int(n_trainable), seconds, peak, float(result.loss), heads,
                          resumed_at_step=result.start_step)


def evaluate_policy(policy: str | Path, tasks, episodes: int, workers: int = 2, image_size: int = 64,
                    seed: int | None = None, cameras: tuple[str, ...] | None = None, progress: bool = False):
    """Closed-loop success of a policy (``"default"``, a checkpoint, or a ``policy.json``) on each task, seen by
    ``cameras`` (default: the policy's own views; named ones must match its ``n_views``, ``policy_cameras``);
    ``progress``: a bar over the episodes (off for the study's background cells)."""
    from robosteer.app.policy import PolicyFactory, policy_cameras
    from robosteer.sim.collect import measure_policy
    from robosteer.sim.env import SimConfig
    from robosteer.sim.tasks import EVAL_SEED

    config = SimConfig(image_size=image_size, cameras=policy_cameras(policy, cameras))
    return measure_policy(PolicyFactory(str(policy)), list(tasks), episodes=episodes, seed=EVAL_SEED if seed is None else seed,
                          workers=workers, config=config, progress=progress)

"""Choosing a pretraining checkpoint by closed-loop success on validation seeds.

Training loss does not predict closed-loop success (docs/default_policy.md: neighbouring checkpoints
differ by a factor of two), so the shipped policy is the checkpoint that succeeds most in the
simulator, judged on validation seeds (``sim.tasks.VALIDATION_SEED``, 3,000,000 +) that are
neither collection seeds (0 ..) nor evaluation seeds (1,000,000 +): the evaluation stays unbiased
by the choice. A checkpoint becomes a policy through :func:`checkpoint_policy`: the finished run's
config and tokenizer with the checkpoint's weights (its weight average where the run kept one,
``ema.safetensors``; the auxiliary read-out dropped).

Usage::

    chosen, table = choose_checkpoint(run / "checkpoints", run / "final", ["lift/base"], out=run / "chosen",
                                      last=3, episodes=10)
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from robosteer.files import atomic_directory, read_json, write_json_atomic

log = logging.getLogger(__name__)

CHOICE_FILE = "checkpoint_choice.json"


def checkpoint_policy(final: Path, checkpoint: Path, out: Path) -> Path:
    """Write the policy of ``checkpoint`` in the format of ``final`` (config, tokenizer) to ``out``: its weight
    average where the run kept one (``ema.safetensors``, what the run ships), else its training weights."""
    import torch
    from safetensors.torch import load_file

    from robosteer.models import load_vla
    from robosteer.train.state import EMA_FILE

    vla = load_vla(final, dtype=torch.float32)
    source = checkpoint / EMA_FILE if (checkpoint / EMA_FILE).is_file() else checkpoint / "trainable.safetensors"
    weights = {k: v for k, v in load_file(str(source)).items() if not k.startswith("aux_")}
    missing, unexpected = vla.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise ValueError(f"{source} does not match {final}: missing {missing[:4]}, unexpected {unexpected[:4]}")
    vla.save_pretrained(out)
    return out


def choose_checkpoint(checkpoints: Path, final: Path, tasks: Sequence[str], *, out: Path, last: int = 3,
                      episodes: int = 10, workers: int = 1, sim_config: Any = None,
                      seed: int | None = None) -> tuple[Path, list[dict]]:
    """Evaluate the newest ``last`` checkpoints under ``checkpoints`` on ``episodes`` validation episodes per task
    and write the best one's policy to ``out``; returns ``(out, table)``, one row per checkpoint.

    The best has the highest mean success over ``tasks``; ties go to the later step (the longer-trained one).
    ``CHOICE_FILE`` beside ``out`` records the table and the choice; a finished choice is reused.
    """
    from robosteer.app.policy import PolicyFactory
    from robosteer.sim.collect import measure_policy
    from robosteer.sim.tasks import VALIDATION_SEED

    seed = VALIDATION_SEED if seed is None else seed
    steps = sorted(p for p in Path(checkpoints).glob("step-*") if p.is_dir() and not p.name.endswith(".partial"))
    if not steps:
        raise ValueError(f"{checkpoints} holds no step-* checkpoints to choose from")
    if last < 1:
        raise ValueError(f"choose from at least one checkpoint, got last={last}")
    candidates = steps[-last:]
    record = Path(out).parent / CHOICE_FILE
    if record.is_file() and Path(out).is_dir():
        done = read_json(record, "checkpoint choice")
        if (done.get("checkpoints") == [c.name for c in candidates] and done.get("episodes_per_task") == episodes
                and done.get("validation_seed") == seed and done.get("tasks") == list(tasks)):
            log.info("checkpoint choice already made: %s", done["chosen"])
            return Path(out), done["table"]
    table = []
    with tempfile.TemporaryDirectory(prefix="robosteer-choice-") as tmp:
        for ckpt in candidates:
            policy = checkpoint_policy(Path(final), ckpt, Path(tmp) / ckpt.name)
            results = measure_policy(PolicyFactory(str(policy)), list(tasks), episodes=episodes, seed=seed,
                                     workers=workers, config=sim_config, progress=False)
            row = {"checkpoint": ckpt.name, "step": int(ckpt.name.split("-")[1]),
                   "success": {t: [r.successes, r.n] for t, r in results.items()},
                   "mean": sum(r.success_rate for r in results.values()) / len(results)}
            table.append(row)
            log.info("checkpoint %s: validation success %.3f %s", ckpt.name, row["mean"], row["success"])
        best = max(range(len(table)), key=lambda i: (table[i]["mean"], table[i]["step"]))
        with atomic_directory(out) as folder:
            shutil.copytree(Path(tmp) / candidates[best].name, folder, dirs_exist_ok=True)
    write_json_atomic(record, {"chosen": table[best]["checkpoint"], "out": str(out), "validation_seed": seed,
                               "episodes_per_task": episodes, "tasks": list(tasks),
                               "checkpoints": [r["checkpoint"] for r in table], "table": table})
    return Path(out), table

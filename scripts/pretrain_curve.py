"""Closed-loop success of pretraining checkpoints: the learning curve of the default policy.

    MUJOCO_GL=egl PYOPENGL_PLATFORM=egl .venv/bin/python scripts/pretrain_curve.py \
        --run runs/default-policy --checkpoints runs/default-policy/curve --episodes 20 --out curve.json

Each ``step-*`` folder (training checkpoints copied while ``robosteer pretrain`` ran; the run
keeps only its newest one) is turned into a policy: the finished run's ``final`` config and
tokenizer with the checkpoint's weights (the auxiliary read-out is dropped). Every policy is
evaluated on the pretraining tasks on evaluation seeds (never used for training).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the pretraining run folder (with final/)")
    p.add_argument("--checkpoints", required=True, help="folder of step-* checkpoint copies")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", required=True, help="JSON file for the curve")
    p.add_argument("--cameras", default="", help="views the policy reads, comma-separated (the run's --cameras)")
    p.add_argument("--seed", type=int, default=None, help="first episode seed (default: the evaluation seeds)")
    args = p.parse_args()
    from robosteer.app.checkpoint_choice import checkpoint_policy
    from robosteer.app.policy import PolicyFactory
    from robosteer.sim.collect import measure_policy
    from robosteer.sim.env import SimConfig
    from robosteer.sim.tasks import EVAL_SEED, get_split

    tasks = [str(t) for t in get_split("default").pretrain]
    cameras = tuple(c for c in args.cameras.split(",") if c)
    sim = SimConfig(cameras=cameras) if cameras else None
    seed = EVAL_SEED if args.seed is None else args.seed
    curve = []
    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in sorted(Path(args.checkpoints).glob("step-*")):
            step = int(ckpt.name.split("-")[1])
            policy = checkpoint_policy(Path(args.run) / "final", ckpt, Path(tmp) / ckpt.name)
            results = measure_policy(PolicyFactory(str(policy)), tasks, episodes=args.episodes, workers=args.workers,
                                     seed=seed, config=sim, progress=False)
            row = {"step": step, "seed": seed, **{t: [r.successes, r.n] for t, r in results.items()}}
            row["mean"] = sum(r.success_rate for r in results.values()) / len(results)
            curve.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(curve, indent=1))


if __name__ == "__main__":
    main()

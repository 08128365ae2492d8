"""Can the default shape learn to read the colour word at all? A small, direct test of grounding.

    MUJOCO_GL=egl PYOPENGL_PLATFORM=egl .venv/bin/python scripts/grounding_toy.py \
        --demos runs/v4/demos --like runs/v4/final --first 3 --steps 600 --variants plain,film --out toy.json

The default-shape model (both views, L1 head) is trained from scratch only on the first ``--first`` frames of every
clean episode and of its counterfactual twin (``demos/clean`` and ``demos/counterfactual`` of a ``pretrain
--counterfactual`` run: the same images, the other cube named, the other cube's trajectory). There the action
is a move towards the named cube, so the images alone cannot predict it: the loss falls below the colour-blind
floor only if the policy reads the colour. Each variant (``plain``: the v3b architecture; ``film``: with
OpenVLA-OFT+'s FiLM) is then measured by ``scripts/instruction_grounding.py``'s test on validation scenes
(first action towards the named cube; 0.5 = chance).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def first_frames(root: Path, first: int) -> list:
    from robosteer.data.dataset import DemoDataset

    ds = DemoDataset(root)
    return [ds[int(i)] for i in np.flatnonzero(ds.step_index < first)]


def run_variant(name: str, like: Path, frames: list, args) -> dict:
    import torch

    import robosteer
    from robosteer.models.loading import build_vla_from_config
    from robosteer.train import TrainConfig, train
    from robosteer.train.strategies import make_strategy

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from instruction_grounding import measure

    base = robosteer.load_vla(like, load_tokenizer=True)
    vla = build_vla_from_config(base.config.replace(use_film=name == "film"), tokenizer=base.tokenizer, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(out_dir=str(Path(tmp) / "run"), steps=args.steps, batch_size=32, lr=args.lr,
                             warmup_steps=min(100, args.steps // 5), schedule="cosine", augment=False,
                             progress=False, log_every=max(1, args.steps // 10), ckpt_every=args.steps,
                             unnorm_key=next(iter(base.config.norm_stats)), seed=args.seed)
        start = time.perf_counter()
        result = train(vla, frames, make_strategy("full"), config)
        seconds = time.perf_counter() - start
        vla.eval().save_pretrained(Path(tmp) / "policy")
        with torch.no_grad():
            grounding = measure(str(Path(tmp) / "policy"), ("agentview", "wrist"), args.scenes, args.seed_scenes)
    return {"variant": name, "final_loss": result.loss, "train_seconds": round(seconds, 1), "grounding": grounding}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demos", required=True, help="a pretrain --counterfactual run's demos/ folder")
    p.add_argument("--like", required=True, help="a policy folder of the default shape (statistics, tokenizer)")
    p.add_argument("--first", type=int, default=3, help="frames from the start of each episode")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--variants", default="plain,film")
    p.add_argument("--scenes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-scenes", type=int, default=3_000_000, help="first validation scene seed")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    demos = Path(args.demos)
    frames = first_frames(demos / "clean", args.first) + first_frames(demos / "counterfactual", args.first)
    print(f"{len(frames)} frames (first {args.first} of each clean and counterfactual episode)", flush=True)
    rows = []
    for name in args.variants.split(","):
        row = run_variant(name, Path(args.like), frames, args)
        rows.append(row)
        g = "  ".join(f"{t} {v['toward_named']:.2f} |da| {v['mean_abs_change']:.3f}" for t, v in row["grounding"].items())
        print(f"{name}: loss {row['final_loss']:.4f} ({row['train_seconds']} s)  {g}", flush=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

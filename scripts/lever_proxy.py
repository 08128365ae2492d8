"""One lever of the default-policy recipe, measured by a short proxy run (docs/default_policy.md, lever table).

Collects (or reuses) clean expert demonstrations of the proxy tasks, trains a default-shape model
from scratch with the full strategy for a fixed number of steps, and measures closed-loop success
on validation seeds (3,000,000 +, disjoint from collection seeds 0 .. and from the evaluation seeds
1,000,000 + that the shipped policy is judged on). Writes ``OUT/result.json``; resumable (the
demos are reused, training resumes from its newest checkpoint, a finished run is only re-evaluated).

    python scripts/lever_proxy.py --out runs/levers/tokens --demos runs/levers/demos
    python scripts/lever_proxy.py --out runs/levers/l1 --demos runs/levers/demos --action-head l1-regression
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from robosteer.cli import configure_logging


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--demos", required=True, help="demo folder (collected there if missing; share it between levers)")
    p.add_argument("--tasks", default="lift/base,place/base")
    p.add_argument("--episodes", type=int, default=200, help="clean expert episodes per task")
    p.add_argument("--action-head", default="tokens", choices=("tokens", "l1-regression"))
    p.add_argument("--chunk", type=int, default=1, help="actions per forward pass (needs --action-head l1-regression)")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-episodes", type=int, default=30)
    p.add_argument("--workers", type=int, default=1, help="collection and evaluation processes")
    p.add_argument("--aux-weight", type=float, default=0.0, help="auxiliary state targets (train/auxiliary.py); 0: off")
    p.add_argument("--cameras", default="agentview", help="views the policy sees, e.g. agentview,wrist")
    p.add_argument("--start-jitter", type=float, default=0.0, help="collection: random start offset in metres (0: off)")
    p.add_argument("--ema", type=float, default=0.0, help="weight average decay (0: off), evaluated as the policy")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: a tenth of the steps, <= 500)")
    args = p.parse_args()
    configure_logging()

    import numpy as np
    import torch

    from robosteer.sim.tasks import VALIDATION_SEED
    from robosteer.app.policy import PolicyFactory
    from robosteer.app.pretrain import RECIPE, combined_statistics
    from robosteer.data.dataset import DemoDataset
    from robosteer.data.demo_format import DATASET_NAME
    from robosteer.files import write_json_atomic
    from robosteer.models.default import default_config
    from robosteer.models.loading import build_vla_from_config
    from robosteer.sim.collect import collect, measure_policy
    from robosteer.sim.collect_config import CollectConfig
    from robosteer.sim.env import SimConfig
    from robosteer.train.config import TrainConfig
    from robosteer.train.loop import train
    from robosteer.train.auxiliary import FullWithoutReadout, StateTargets
    from robosteer.train.strategies import make_strategy

    torch.set_num_threads(args.threads)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    cameras = tuple(c.strip() for c in args.cameras.split(",") if c.strip())
    views = cameras if len(cameras) > 1 else None
    demos_dir, out = Path(args.demos), Path(args.out)
    t0 = time.perf_counter()
    if not (demos_dir / "meta.json").is_file():
        collect(CollectConfig(tasks=tasks, episodes=args.episodes, seed=0, workers=args.workers, image_size=64,
                              cameras=views, start_jitter=args.start_jitter), demos_dir)
    collect_s = time.perf_counter() - t0
    frames = DemoDataset(demos_dir)
    stats = combined_statistics(frames, DATASET_NAME)
    if args.chunk > 1:  # each frame's next K actions (the policy then runs each chunk open loop)
        from robosteer.data.chunks import ActionChunks

        frames = ActionChunks(frames, args.chunk)
    cfg, tok = default_config(stats)
    if args.action_head != "tokens":
        cfg = cfg.replace(action_head=args.action_head, action_chunk=args.chunk)
    if views:
        cfg = cfg.replace(n_views=len(views))
    vla = build_vla_from_config(cfg, tokenizer=tok, seed=0)
    n_params = sum(p.numel() for p in vla.parameters())
    recipe = {**RECIPE, "ckpt_every": 200, "log_every": 20}  # the default policy's recipe, logged more often
    train_cfg = TrainConfig(out_dir=str(out), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            warmup_steps=min(500, args.steps // 10) if args.warmup is None else args.warmup, seed=0, augment=True,
                            label_smoothing=1.0 if args.action_head == "tokens" else 0.0, progress=False,
                            ema_decay=args.ema, **recipe)
    t1 = time.perf_counter()
    if args.aux_weight > 0:
        with StateTargets.attached(vla, args.aux_weight, 0) as aux:
            result = train(vla, frames, FullWithoutReadout(), train_cfg, auxiliary=aux)
        StateTargets.detach(vla)
    else:
        result = train(vla, frames, make_strategy("full"), train_cfg)
    train_s = result.elapsed_s
    first = first_action_agreement(str(result.output), DemoDataset(demos_dir))
    t2 = time.perf_counter()
    evals = measure_policy(PolicyFactory(str(result.output)), list(tasks), episodes=args.eval_episodes,
                           seed=VALIDATION_SEED, workers=args.workers, config=SimConfig(image_size=64, cameras=cameras), progress=False)
    eval_s = time.perf_counter() - t2
    summary = {
        "lever": {"action_head": args.action_head, "chunk": args.chunk, "aux_weight": args.aux_weight,
                  "cameras": list(cameras), "lr": args.lr,
                  "start_jitter": args.start_jitter, "ema_decay": args.ema, "steps": args.steps}, "tasks": list(tasks),
        "episodes_per_task": args.episodes, "frames": len(frames), "parameters": int(n_params),
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads,
        "final_loss": float(result.loss), "train_s": round(train_s, 1), "collect_s": round(collect_s, 1),
        "eval_s": round(eval_s, 1), "validation_seed": VALIDATION_SEED,
        "success": {t: {"successes": r.successes, "episodes": r.n, "rate": r.success_rate,
                        "ci95": [round(x, 4) for x in r.ci95]} for t, r in evals.items()},
        "first_action_on_training_episodes": first,
        "mean_success": float(np.mean([r.success_rate for r in evals.values()])),
        "wall_s": round(time.perf_counter() - t0, 1), "train_wall_s": round(t2 - t1, 1),
    }
    write_json_atomic(out / "result.json", summary)
    print(json.dumps(summary, indent=1))
    return 0


def first_action_agreement(policy_spec: str, demos, episodes: int = 60) -> dict:
    """How well the policy reads the scene where only the image tells: the first frame of training episodes.

    At t = 0 the arm's pose is nearly the same in every episode, so the expert's first move (towards the
    named object) follows from the image and the instruction alone. Returns the fraction of episodes whose
    predicted x / y command has the expert's sign, and the mean absolute error of x / y / z.
    """
    import numpy as np

    from robosteer.app.policy import load_policy

    policy = load_policy(policy_spec)
    agree, err = [], []
    for ep in range(min(episodes, len(demos.episode_rows))):
        f = demos[int(demos.episode_frames(ep)[0])]
        policy.reset()
        a = np.asarray(policy(tuple(f.images) if len(f.images) > 1 else f.image, f.instruction, f.proprio))
        agree.append(np.sign(a[:2]) == np.sign(f.action[:2]))
        err.append(np.abs(a[:3] - f.action[:3]))
    return {"episodes": len(agree), "sign_agreement_xy": [round(float(x), 3) for x in np.mean(agree, 0)],
            "abs_error_xyz": [round(float(x), 3) for x in np.mean(err, 0)]}


if __name__ == "__main__":
    raise SystemExit(main())

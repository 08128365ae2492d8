"""Closed-loop evaluation speed of action chunks against v1's tokens, side by side in one run.

Conditions (the default policy's shape, random weights — speed does not depend on the weights, and
failing episodes run the whole horizon, so every condition runs the same number of control steps):

- ``v1 tokens``: v1's recipe (7 action tokens decoded one by one, KV cache; the shipped default was
  this until v5);
- ``L1 K=1``: OpenVLA-OFT's regression head, one action per pass;
- ``L1 K=4`` / ``K=8``: chunks run open loop (one pass per K steps);
- ``L1 K=8 ensemble``: ACT's temporal ensembling (a pass every step);
- each L1 condition also with two camera views (agentview + wrist) where ``--views`` includes 2.

Rounds interleave the conditions (one episode of each per round, the same scene seed), so load
on this shared machine hits every condition alike; the table gives medians and spreads (min-max)
over rounds of episodes per second, seconds of policy compute per episode, and forward passes per
episode (an exact count that noise cannot move).

    MUJOCO_GL=egl PYOPENGL_PLATFORM=egl .venv/bin/python benchmarks/chunk_eval_speed.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


class Timed:
    """A policy wrapper that sums the seconds spent inside the policy."""

    def __init__(self, policy) -> None:
        self.policy, self.seconds = policy, 0.0

    def reset(self) -> None:
        self.policy.reset()

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.policy(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def conditions(views_list):
    from robosteer.app.policy import VLAPolicy
    from robosteer.models.default import default_config
    from robosteer.models.loading import build_vla_from_config, load_vla

    stats = load_vla("default", load_tokenizer=False).config.norm_stats
    cfg, tok = default_config(stats)
    out = [("v1 tokens, 1 view", VLAPolicy(build_vla_from_config(cfg, tokenizer=tok, seed=0), "robosteer_sim"), 1)]
    for views in views_list:
        for chunk, ensemble in ((1, None), (4, None), (8, None), (8, 0.01)):
            cfg, tok = default_config(stats)
            cfg = cfg.replace(action_head="l1-regression", action_chunk=chunk, n_views=views)
            vla = build_vla_from_config(cfg, tokenizer=tok, seed=0)
            name = f"L1 K={chunk}{' ensemble' if ensemble is not None else ''}, {views} view{'s' if views > 1 else ''}"
            out.append((name, VLAPolicy(vla, "robosteer_sim", ensemble=ensemble), views))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--task", default="lift/base")
    p.add_argument("--views", default="1,2", help="camera views of the L1 conditions, e.g. 1,2")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from robosteer.sim.env import SimConfig, make_env
    from robosteer.sim.evaluate import evaluate

    views_list = [int(v) for v in args.views.split(",")]
    conds = conditions(views_list)
    envs = {v: make_env(SimConfig(image_size=64, cameras=("agentview", "wrist")[:v])) for v in {1, *views_list}}
    rows = {name: {"eps": [], "policy_s": [], "passes": []} for name, _, _ in conds}
    try:
        for r in range(args.rounds):
            for name, policy, views in conds:
                timed = Timed(policy)
                before = policy.forward_passes
                t0 = time.perf_counter()
                evaluate(timed, args.task, episodes=1, seed=4_000_000 + r, env=envs[views], progress=False)
                wall = time.perf_counter() - t0
                rows[name]["eps"].append(1.0 / wall)
                rows[name]["policy_s"].append(timed.seconds)
                rows[name]["passes"].append(policy.forward_passes - before)
    finally:
        for env in envs.values():
            env.close()
    base = np.median(rows[conds[0][0]]["eps"])
    print(f"{args.task}, {args.rounds} rounds, {args.threads} thread(s); medians [min-max] over rounds")
    print(f"{'condition':28s} {'episodes/s':>22s} {'x v1':>6s} {'policy s/episode':>22s} {'passes/episode':>15s}")
    for name, _, _ in conds:
        e, s, n = (np.asarray(rows[name][k]) for k in ("eps", "policy_s", "passes"))
        print(f"{name:28s} {np.median(e):8.3f} [{e.min():.3f}-{e.max():.3f}] {np.median(e) / base:6.2f} "
              f"{np.median(s):8.2f} [{s.min():.2f}-{s.max():.2f}] {np.median(n):15.0f}")


if __name__ == "__main__":
    main()

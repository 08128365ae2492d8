"""Attribution patching vs activation patching on sim probes, side by side in one run.

For each probe kind, times activation patching (one forward per head, batched over heads)
and attribution patching (one clean forward + one corrupted forward/backward for all
heads), and prints the time ratio and the Spearman rank correlation of their scores.

    .venv/bin/python benchmarks/patching_speed.py [--policy default] [--task lift/base] [--pairs 8]
"""

from __future__ import annotations

import argparse
import time

import torch

import robosteer
from robosteer.circuits.patching import PatchingConfig, activation_patching, attribution_patching
from robosteer.app.sim_probes import sim_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="default")
    parser.add_argument("--task", default="lift/base")
    parser.add_argument("--probes", default="visual,linguistic,physical")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--towers", default="llm")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vla = robosteer.load_vla(args.policy)
    towers = tuple(args.towers.split(","))
    print(f"policy {args.policy}: heads {vla.head_layout.to_dict()}; task {args.task}; {args.pairs} pairs per probe; "
          f"{torch.get_num_threads()} threads")
    print(f"{'probe':12s} {'activation s':>13s} {'attribution s':>14s} {'speed-up':>9s} {'Spearman':>9s} {'gap/pair':>9s}")
    for kind in args.probes.split(","):
        probe = sim_probe(kind, task=args.task, n=args.pairs, image_size=vla.config.image_size)
        t0 = time.perf_counter()
        act = activation_patching(vla, probe, PatchingConfig(towers=towers))
        t_act = time.perf_counter() - t0
        t0 = time.perf_counter()
        attr = attribution_patching(vla, probe, towers=towers)
        t_attr = time.perf_counter() - t0
        rho = act.spearman(attr, act.default_column, other_column=attr.default_column)
        gap = act.meta.get("clean_minus_corrupted", float("nan"))
        print(f"{kind:12s} {t_act:13.2f} {t_attr:14.2f} {t_act / t_attr:8.1f}x {rho:9.3f} {gap:9.3f}")


if __name__ == "__main__":
    main()

"""Forward-pass cost of the hook layer, measured side by side in one run.

Three conditions, interleaved round by round so that machine noise hits all alike:
the plain model; every head site (``hook_z`` of every tower) registered with a hook
that records nothing; and a full ``hook_z`` cache (``run_with_cache``). Prints the
median time of each and the ratios to plain (goal: registered-but-idle <= 1.02).

    .venv/bin/python benchmarks/hook_overhead.py [--rounds 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import robosteer
from robosteer.models.default import DEFAULT_SHAPE
from robosteer.models.tiny import tiny_vla

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "openvla-tiny-a"


def idle(act, site):
    return None


def measure(name: str, vla, kw: dict, rounds: int) -> None:
    names = [n for n in vla.hook_names(kinds=["hook_z"]) if vla.hook_points().active(robosteer.HookSite.parse(n))]
    times = {"plain": [], "registered": [], "cached": []}
    with torch.no_grad():
        for _ in range(3):  # warm-up
            vla(**kw)
        for _ in range(rounds):
            t0 = time.perf_counter()
            vla(**kw)
            times["plain"].append(time.perf_counter() - t0)
            with vla.hooks(fwd_hooks=[("*hook_z", idle)]):
                t0 = time.perf_counter()
                vla(**kw)
                times["registered"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            vla.run_with_cache(**kw, names_filter="*hook_z")
            times["cached"].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{name}: {len(vla.sites())} head sites on {len(names)} hook_z points")
    print(f"  plain      {med['plain'] * 1e3:8.2f} ms")
    print(f"  registered {med['registered'] * 1e3:8.2f} ms   ratio {med['registered'] / med['plain']:.3f}  (goal <= 1.02)")
    print(f"  hook_z cache {med['cached'] * 1e3:6.2f} ms   ratio {med['cached'] / med['plain']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median over {args.rounds} interleaved rounds")
    vla = tiny_vla(seed=0, **{**DEFAULT_SHAPE, 'proprio_dim': 0})
    img = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    kw = dict(input_ids=vla.tokenize("pick up the red cube").expand(4, -1), pixel_values=vla.preprocess(list(img)))
    measure("default-policy shape (64px, llm 6x8, batch 4)", vla, kw, args.rounds)
    if FIXTURE.is_dir():
        ref = robosteer.load_vla(FIXTURE, dtype=torch.float32)
        e = np.load(FIXTURE / "expected.npz")
        kw = dict(input_ids=torch.from_numpy(e["case0_input_ids_full"]).expand(2, -1),
                  pixel_values=torch.from_numpy(e["pixel_values"]))
        measure("reference tiny checkpoint (224px, 256 patches, batch 2)", ref, kw, args.rounds)


if __name__ == "__main__":
    main()

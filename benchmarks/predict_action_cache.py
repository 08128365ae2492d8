"""KV-cached greedy decoding vs the no-cache loop, side by side in one run.

Prints the time per ``predict_action`` call for both and their ratio, and checks
that they produce the same tokens. Models: the reference tiny checkpoint (224 px,
256 patches) and a small OpenVLA-architecture policy of the default's size class.

    .venv/bin/python benchmarks/predict_action_cache.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import robosteer
from robosteer.models.generation import greedy_action_tokens
from robosteer.models.default import DEFAULT_SHAPE
from robosteer.models.tiny import tiny_vla

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "openvla-tiny-a"


def bench(name: str, vla, input_ids: torch.Tensor, pixel_values: torch.Tensor, repeats: int) -> None:
    n = vla.config.action_dim
    results = {}
    for use_cache in (True, False):
        greedy_action_tokens(vla, input_ids, pixel_values, n, use_cache=use_cache)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            tokens = greedy_action_tokens(vla, input_ids, pixel_values, n, use_cache=use_cache)
            times.append(time.perf_counter() - t0)
        results[use_cache] = (float(np.median(times)), tokens)
    same = torch.equal(results[True][1], results[False][1])
    cached, plain = results[True][0], results[False][0]
    print(f"{name:38s} cache {cached * 1e3:8.2f} ms   no-cache {plain * 1e3:8.2f} ms   "
          f"speed-up x{plain / cached:5.2f}   same tokens: {same}")
    if not same:
        raise SystemExit("KV-cache decoding disagrees with the no-cache loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} calls, 7 action tokens")
    if FIXTURE.is_dir():
        vla = robosteer.load_vla(FIXTURE, dtype=torch.float32)
        e = np.load(FIXTURE / "expected.npz")
        ids = vla.with_prompt_suffix(torch.from_numpy(e["case0_input_ids"]))
        bench("reference tiny (224px, 256 patches)", vla, ids, torch.from_numpy(e["pixel_values"][:1]), args.repeats)
    vla = tiny_vla(seed=0, **{**DEFAULT_SHAPE, 'proprio_dim': 0})
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bench("default-policy shape (64px, llm 6x8 heads)", vla, vla.tokenize("pick up the red cube"), vla.preprocess(img),
          args.repeats)


if __name__ == "__main__":
    main()

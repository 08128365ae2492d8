"""Time the vectorised kNN head scorer against two per-head loops (goal of issue #6: >= 20x).

    .venv/bin/python benchmarks/knn_speed.py               # both sizes, torch's default threads
    .venv/bin/python benchmarks/knn_speed.py --threads 1   # single-threaded (steadier on a busy machine)
    .venv/bin/python benchmarks/knn_speed.py --quick       # the small size only

For each size it prints the wall time (best of ``--repeats``) of ``knn_scores`` in
float64 (the default) and float32, of the same kernel run one head per chunk, and of
the two loops it replaces, with the speed-up against each side by side:

- ``knn_scores_loop``: our numpy reference, one head and one held-out episode at a
  time, one sort per fold shared by every k;
- ``knn_scores_released_style``: the released Robotic Steering code's style, one
  distance-weighted cosine kNN regressor fitted and queried per head, fold and k
  (scikit-learn's brute-force ``KNeighborsRegressor`` steps, written in numpy).

It exits non-zero if the float64 scores differ from either loop by more than 1e-9.
Data: random activations with a few planted informative heads, keyframes from 20
episodes, 7-D actions. The loops run once (they take seconds to a minute).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from robosteer.circuits.knn import KNNConfig, knn_scores
from robosteer.circuits.knn_reference import knn_scores_loop, knn_scores_released_style
from robosteer.sites import HeadLayout

GOAL = 20.0  # issue #6: vectorised kNN vs per-head loop time ratio
SIZES = {  # name -> (n_layers, n_heads, d_head, n_frames, n_episodes, n_action_dims)
    "48 heads x d_head 32": (4, 12, 32, 300, 20, 7),
    "1024 heads x d_head 128 (7B LLM)": (32, 32, 128, 300, 20, 7),
}


def synthetic(n_layers, n_heads, d_head, n_frames, n_episodes, n_actions, seed=0):
    """(N, H, D) activations where every (H // 8)-th head carries the action, plus actions and episode ids."""
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(n_frames, n_actions, generator=g)
    acts = torch.randn(n_frames, n_layers * n_heads, d_head, generator=g)  # (N, H, D)
    for h in range(0, n_layers * n_heads, max(1, n_layers * n_heads // 8)):
        acts[:, h, :n_actions] += (1 + h % 3) * actions
    episodes = torch.arange(n_frames) * n_episodes // n_frames
    return acts, actions, episodes, HeadLayout({"llm": (n_layers, n_heads)}).heads()


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def max_diff(a, b) -> float:
    return max(float(np.abs(a.values(c) - b.values(c)).max()) for c in ("knn", "knn/mse"))


def run(name, dims, repeats) -> bool:
    acts, actions, episodes, heads = synthetic(*dims)
    score = lambda config: knn_scores(acts, actions, episodes, heads, config=config)  # noqa: E731
    t64, fast64 = timed(lambda: score(KNNConfig(dtype="float64")), repeats)
    t32, fast32 = timed(lambda: score(KNNConfig(dtype="float32")), repeats)
    t1, _ = timed(lambda: score(KNNConfig(dtype="float64", max_chunk_bytes=1)), 1)
    t_loop, slow = timed(lambda: knn_scores_loop(acts, actions, episodes, heads), 1)
    t_rel, released = timed(lambda: knn_scores_released_style(acts, actions, episodes, heads), 1)
    print(f"\n{name}: N={dims[3]} keyframes from {dims[4]} episodes, A={dims[5]}, k grid {KNNConfig().k_grid}")
    print(f"  {'reference loop (per head, per fold)':42s} {t_loop * 1e3:9.1f} ms")
    print(f"  {'released-style loop (per head, fold, k)':42s} {t_rel * 1e3:9.1f} ms")
    print(f"  {'':42s} {'':9s}      speed-up vs reference | vs released-style")
    for label, t in (("vectorised float64 (default)", t64), ("vectorised float32", t32)):
        print(f"  {label:42s} {t * 1e3:9.1f} ms   {t_loop / t:18.1f}x | {t_rel / t:6.1f}x")
    print(f"  {'same kernel, one head per chunk (f64)':42s} {t1 * 1e3:9.1f} ms   {t1 / t64:18.1f}x the batched time")
    verdict = lambda ratio: "met" if ratio >= GOAL else "NOT met"  # noqa: E731
    print(f"  goal >= {GOAL:.0f}x (float64 default): vs reference loop {t_loop / t64:.1f}x, {verdict(t_loop / t64)}; "
          f"vs released-style loop {t_rel / t64:.1f}x, {verdict(t_rel / t64)}")
    k_equal = all(np.array_equal(fast64.values("knn/k"), other.values("knn/k")) for other in (slow, released))
    ok = max(max_diff(fast64, slow), max_diff(fast64, released)) <= 1e-9 and k_equal
    print(f"  agreement: float64 max |diff| {max_diff(fast64, slow):.1e} vs reference, {max_diff(fast64, released):.1e} "
          f"vs released-style (best k equal: {k_equal}); float32 max |diff| {max_diff(fast32, slow):.1e}, "
          f"top-20 heads equal: {fast32.top(20) == slow.top(20)}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run only the small size")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs for the vectorised scorer")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    ok = True
    for name, dims in SIZES.items():
        ok &= run(name, dims, args.repeats)
        if args.quick:
            break
    if not ok:
        print("FAIL: the vectorised float64 scores differ from a loop")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

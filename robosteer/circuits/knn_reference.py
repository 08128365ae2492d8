"""The reference kNN head scorer: one head and one held-out fold at a time, in numpy.

``knn_scores_loop`` computes exactly what ``knn.knn_scores`` computes, the way a
per-head loop over cross-validation folds would (a fold is one held-out episode, or
one held-out frame in single-episode mode), in float64 numpy. It is slow on purpose
and kept only to check the vectorised scorer (tests) and to time it (benchmarks).
"""

from __future__ import annotations

import numpy as np
import torch

from robosteer.circuits.activations import head_blocks, prepare_targets
from robosteer.circuits.knn import KNNConfig, check_k_grid, describe_data, mean_predictor_mse, neighbour_mask, \
    scores_from_errors
from robosteer.circuits.scores import HeadScores
from robosteer.sites import HeadLayout


def _folds(allowed: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group query frames that share one neighbour set: [(queries, candidates), ...]."""
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(allowed):
        groups.setdefault(row.tobytes(), []).append(i)
    return [(np.array(q), np.flatnonzero(allowed[q[0]])) for q in groups.values()]


def _head_errors(x: np.ndarray, y: np.ndarray, folds, k_grid: tuple[int, ...], eps: float) -> np.ndarray:
    """One head: x (N, D) float64 -> (len(k_grid),) MSE."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, np.finfo(np.float64).tiny)
    sq_err = np.zeros((len(k_grid), *y.shape))  # (n_k, N, A)
    for queries, cands in folds:
        sim = x[queries] @ x[cands].T  # (q, c)
        order = np.argsort(-sim, axis=1, kind="stable")
        for col, k in enumerate(k_grid):
            nearest = order[:, : min(k, len(cands))]  # (q, k)
            dist = np.maximum(1.0 - np.take_along_axis(sim, nearest, axis=1), 0.0)
            w = 1.0 / (dist + eps)  # (q, k)
            pred = np.einsum("qk,qka->qa", w, y[cands][nearest]) / w.sum(axis=1, keepdims=True)
            sq_err[col, queries] = (pred - y[queries]) ** 2
    return sq_err.mean(axis=(1, 2))


def knn_scores_loop(acts, actions, episodes=None, heads=None, *, frames=None, config: KNNConfig = KNNConfig(),
                    probe: str | None = None, layout: HeadLayout | None = None, fingerprint: str | None = None,
                    data: str | None = None) -> HeadScores:
    """``knn_scores_loop(acts, actions, episodes, heads)``: reference for ``knn_scores`` (same arguments, same result)."""
    blocks = head_blocks(acts, heads, layout, dtype=torch.float64)
    n = blocks[0].acts.shape[0]
    y_t, ep, fr = prepare_targets(actions, episodes, n, frames)
    allowed_t, protocol = neighbour_mask(ep, fr, config.window)
    check_k_grid(config.k_grid, allowed_t)
    folds = _folds(allowed_t.numpy())
    y = y_t.numpy()
    heads_out, errors = [], []
    for block in blocks:
        x = block.acts.numpy()  # (N, H, D)
        for h, head in enumerate(block.heads):
            heads_out.append(head)
            errors.append(_head_errors(x[:, h, :], y, folds, config.k_grid, config.eps))
    name = "knn" if probe is None else f"knn:{probe}"
    meta = {"protocol": protocol, "n_frames": n, "n_episodes": int(torch.unique(ep).numel())}
    return scores_from_errors(heads_out, torch.tensor(np.array(errors)), mean_predictor_mse(y_t, allowed_t), config,
                              name=name, layout=layout, probe=probe, fingerprint=fingerprint,
                              data=data or describe_data(n, ep, protocol), meta=meta)

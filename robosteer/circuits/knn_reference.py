"""Reference kNN head scorers, one head and one held-out fold at a time, in numpy.

``knn_scores_loop`` computes exactly what ``knn.knn_scores`` computes, the way a
per-head loop over cross-validation folds would (a fold is one held-out episode, or
one held-out frame in single-episode mode), in float64 numpy: one similarity matrix
and one sort per fold serve every k of the grid. It is kept to check the vectorised
scorer (tests) and to time it (benchmarks).

``knn_scores_released_style`` computes the same numbers the way the released Robotic
Steering code does (docs/circuits.md, "kNN regression"): per head, per held-out fold,
per k, a fresh distance-weighted kNN regressor is fitted and queried. Each query follows
scikit-learn's ``KNeighborsRegressor(metric="cosine", weights="distance")`` brute-force
path step by step (normalise both sides, cosine distances clipped to [0, 2],
``argpartition`` to the k nearest then ``argsort`` of those, inverse-distance mean),
with the ``1 / (d + eps)`` weights of ``knn.knn_scores`` so the results match. It is a
timing baseline for ``benchmarks/knn_speed.py``, not used by the library.
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


def _regressor_predict(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, k: int,
                       eps: float) -> np.ndarray:
    """One fitted-and-queried kNN regressor, as scikit-learn's brute-force cosine path computes it."""
    def normalize(a):
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), np.finfo(np.float64).tiny)

    dist = np.clip(1.0 - normalize(query_x) @ normalize(train_x).T, 0.0, 2.0)  # (q, c)
    k = min(k, len(train_x))
    rows = np.arange(len(query_x))[:, None]
    nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]  # (q, k), unordered
    nearest = nearest[rows, np.argsort(dist[rows, nearest], axis=1, kind="stable")]  # (q, k), nearest first
    w = 1.0 / (dist[rows, nearest] + eps)  # (q, k)
    return np.einsum("qk,qka->qa", w, train_y[nearest]) / w.sum(axis=1, keepdims=True)


def _head_errors_released_style(x: np.ndarray, y: np.ndarray, folds, k_grid: tuple[int, ...], eps: float) -> np.ndarray:
    """One head: x (N, D) float64 -> (len(k_grid),) MSE, one regressor per fold and k."""
    sq_err = np.zeros((len(k_grid), *y.shape))  # (n_k, N, A)
    for queries, cands in folds:
        for col, k in enumerate(k_grid):
            sq_err[col, queries] = (_regressor_predict(x[cands], y[cands], x[queries], k, eps) - y[queries]) ** 2
    return sq_err.mean(axis=(1, 2))


def knn_scores_loop(acts, actions, episodes=None, heads=None, *, frames=None, config: KNNConfig = KNNConfig(),
                    probe: str | None = None, layout: HeadLayout | None = None, fingerprint: str | None = None,
                    data: str | None = None) -> HeadScores:
    """``knn_scores_loop(acts, actions, episodes, heads)``: reference for ``knn_scores`` (same arguments, same result)."""
    return _scores_per_head(_head_errors, acts, actions, episodes, heads, frames=frames, config=config, probe=probe,
                            layout=layout, fingerprint=fingerprint, data=data)


def knn_scores_released_style(acts, actions, episodes=None, heads=None, *, frames=None,
                              config: KNNConfig = KNNConfig(), probe: str | None = None,
                              layout: HeadLayout | None = None, fingerprint: str | None = None,
                              data: str | None = None) -> HeadScores:
    """``knn_scores_released_style(acts, actions, episodes, heads)``: one regressor per head, fold and k."""
    return _scores_per_head(_head_errors_released_style, acts, actions, episodes, heads, frames=frames, config=config,
                            probe=probe, layout=layout, fingerprint=fingerprint, data=data)


def _scores_per_head(head_errors, acts, actions, episodes, heads, *, frames, config: KNNConfig, probe, layout,
                     fingerprint, data) -> HeadScores:
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
            errors.append(head_errors(x[:, h, :], y, folds, config.k_grid, config.eps))
    name = "knn" if probe is None else f"knn:{probe}"
    meta = {"protocol": protocol, "n_frames": n, "n_episodes": int(torch.unique(ep).numel())}
    return scores_from_errors(heads_out, torch.tensor(np.array(errors)), mean_predictor_mse(y_t, allowed_t), config,
                              name=name, layout=layout, probe=probe, fingerprint=fingerprint,
                              data=data or describe_data(n, ep, protocol), meta=meta)

"""Greedy forward selection of heads by joint kNN-regression error.

Robotic Steering's greedy selection as robosteer first wrote it (the released code's
``best_add``, with its own rules, is ``released_selection.select_heads_knn(mode="best_add")``;
docs/circuits.md compares them): start from no head
(error = the mean predictor's), and repeatedly add the candidate head whose
activation, concatenated with those already chosen, gives the lowest
leave-one-episode-out kNN error (same protocol as ``knn.knn_scores``); stop when no
head lowers the error by more than ``min_improvement`` or ``max_heads`` are chosen.

Each head's activation is L2-normalised before concatenation, so every chosen head
weighs the same. The cosine similarity of m concatenated unit vectors is then the
mean of the m per-head cosine similarities, so a step only adds one cached (N, N)
similarity per candidate instead of re-normalising long vectors, and all candidates
of a step are scored in one batch with ``knn.knn_errors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from robosteer.circuits.activations import head_blocks, prepare_targets, unit_rows
from robosteer.circuits.knn import KNNConfig, check_k_grid, knn_scores, knn_errors, mean_predictor_mse, \
    neighbour_mask
from robosteer.circuits.scores import HeadScores
from robosteer.sites import Head, HeadLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GreedySelection:
    """The result of ``greedy_select``: heads in the order added and the joint error after each."""

    heads: tuple[Head, ...]  # chosen heads, first added first
    mse: tuple[float, ...]  # joint kNN MSE after adding heads[:i+1]
    k: tuple[int, ...]  # best k of the grid after adding heads[:i+1]
    baseline_mse: float  # the error with no head: predicting the neighbours' mean action
    candidates: tuple[Head, ...]  # the pool the heads were chosen from
    protocol: str  # "leave-one-episode-out" or the single-episode window protocol

    def __post_init__(self) -> None:
        if not len(self.heads) == len(self.mse) == len(self.k):
            raise ValueError(f"heads, mse and k must have equal lengths, got {len(self.heads)}, "
                             f"{len(self.mse)}, {len(self.k)}")

    def to_mask(self, layout: HeadLayout, fingerprint: str | None = None, data: str = ""):
        """``selection.to_mask(vla.head_layout)`` -> ``HeadMask`` of the chosen heads (score = joint MSE when added)."""
        from robosteer.masks import HeadMask

        return HeadMask.from_heads(self.heads, layout, scores=self.mse, method="knn-greedy", column="knn/mse",
                                   fingerprint=fingerprint, data=data)


def greedy_select(acts, actions, episodes=None, heads=None, *, frames=None, config: KNNConfig = KNNConfig(),
                  max_heads: int = 20, candidates: int | None = 64, scores: HeadScores | None = None,
                  min_improvement: float = 0.0, layout: HeadLayout | None = None) -> GreedySelection:
    """``greedy_select(acts, actions, episodes, heads, max_heads=20)`` -> ``GreedySelection``.

    Inputs as for ``knn_scores``. ``candidates`` bounds the pool to the best single heads
    by kNN score (``None``: every head); pass ``scores`` (a ``knn_scores`` result over the
    same data) to reuse single-head scores instead of recomputing them. Memory: the pool's
    (P, N, N) similarities are cached.
    """
    if max_heads < 1:
        raise ValueError(f"max_heads must be >= 1, got {max_heads}")
    if candidates is not None and candidates < 1:
        raise ValueError(f"candidates must be >= 1 or None, got {candidates}")
    if min_improvement < 0:
        raise ValueError(f"min_improvement must be >= 0, got {min_improvement}")
    blocks = head_blocks(acts, heads, layout, dtype=config.torch_dtype)
    by_head = {h: (block, i) for block in blocks for i, h in enumerate(block.heads)}
    n = blocks[0].acts.shape[0]
    y, ep, fr = prepare_targets(actions, episodes, n, frames)
    allowed, protocol = neighbour_mask(ep, fr, config.window)
    check_k_grid(config.k_grid, allowed)

    pool = list(by_head)
    if candidates is not None and candidates < len(pool):
        if scores is None:
            scores = knn_scores(acts, actions, episodes, heads, frames=frames, config=config, layout=layout)
        ranked = [h for h in scores.top(None, scores.default_column) if h in by_head]
        pool = ranked[:candidates]
    sims = []
    for h in pool:
        block, i = by_head[h]
        x = unit_rows(block.acts[:, i, :])  # (N, D)
        sims.append(x @ x.T)  # (N, N)
    sim = torch.stack(sims)  # (P, N, N)
    del sims

    baseline = mean_predictor_mse(y, allowed)
    chosen: list[int] = []
    errs: list[float] = []
    ks: list[int] = []
    current = baseline
    total = torch.zeros(n, n, dtype=sim.dtype)  # sum of the chosen heads' similarities
    chunk = max(1, config.max_chunk_bytes // (3 * n * n * sim.element_size() + 1))
    while len(chosen) < min(max_heads, len(pool)):
        remaining = [p for p in range(len(pool)) if p not in chosen]
        step_err = []
        for start in range(0, len(remaining), chunk):
            idx = torch.tensor(remaining[start : start + chunk])
            joint = (total + sim[idx]) / (len(chosen) + 1)  # (c, N, N)
            step_err.append(knn_errors(joint, y, allowed, config.k_grid, config.eps))
        err = torch.cat(step_err)  # (R, n_k)
        best_per_head, best_col = err.min(dim=1)
        r = int(best_per_head.argmin())
        if not float(best_per_head[r]) < current - min_improvement:
            break
        p = remaining[r]
        chosen.append(p)
        current = float(best_per_head[r])
        errs.append(current)
        ks.append(config.k_grid[int(best_col[r])])
        total += sim[p]
        log.info("greedy step %d: + %s, joint mse %.6g (k=%d)", len(chosen), pool[p], current, ks[-1])
    return GreedySelection(tuple(pool[p] for p in chosen), tuple(errs), tuple(ks), baseline, tuple(pool), protocol)

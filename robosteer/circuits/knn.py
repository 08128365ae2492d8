"""kNN-regression head scores: how well does one head's activation predict the action?

This is the head score of the released Robotic Steering code (docs/circuits.md, "kNN
regression" and "Released selection vs robosteer's variant"). For head h and frame i:

- neighbours: frames of *other* episodes (leave-one-episode-out); with a single
  episode, frames more than ``window`` frames away from i (leave-one-frame-out with a
  ±window exclusion);
- distance: cosine, d_ij = 1 − <x_i, x_j> / (|x_i| |x_j|) on the head's activation;
- prediction: the inverse-distance-weighted mean of the k nearest neighbours' actions,
  ŷ_i = Σ_j w_ij y_j / Σ_j w_ij with w_ij = 1 / (d_ij + eps);
- error: MSE_h(k) = mean over frames and action dimensions of (ŷ_i − y_i)²; each head
  keeps its best k from the grid (default 10, 20, 30, 40).

Columns of the returned ``HeadScores`` (``name`` is ``"knn"`` or ``"knn:<probe>"``):
``name`` = 1 − MSE_h / MSE_mean (higher is better; 0 = no better than predicting the
mean action of the same neighbour set, the R²-like skill), ``name/mse`` = MSE_h
(lower is better), ``name/k`` = the k that achieved it.

All heads are scored at once: normalised activations (H, N, D) @ (H, D, N) give every
head's (N, N) cosine similarity, with same-episode pairs set to -inf in the same
``baddbmm``; one ``topk`` over the largest k orders the neighbours, and prefix sums
(``cumsum``) of the weights and weighted actions, read at column k − 1, give the
prediction for every k of the grid from that one top-k.
Heads are processed in chunks whose (h, N, N) block stays within ~8 MiB (cache) and
``max_chunk_bytes``. ``knn_reference.knn_scores_loop`` is the slow, obviously-correct
version used in tests; ``knn_reference.knn_scores_released_style`` is the released
code's loop (a regressor per head, fold and k).

Speed (``benchmarks/knn_speed.py --threads 1``, 300 keyframes, 2-core CPU shared with a
training job): the cost is the similarity matmul plus the per-row top-k selection
(~4 µs per row of 300 in torch or numpy alike), which every implementation pays, so
the batched scorer is a few times faster than the loops, not the 20× issue #6 asks
for; see docs/circuits.md for the measured numbers. A float32 similarity with a
float64 re-rank was considered: the f32 matmul saves ~40% of the matmul only, and the
re-rank gathers (h, N, k, D) float64 rows, which costs more than it saves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from robosteer.circuits.activations import head_blocks, prepare_targets, unit_rows
from robosteer.circuits.scores import HeadScores
from robosteer.sites import Head, HeadLayout

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class KNNConfig:
    """Settings of the kNN head scorer: ``KNNConfig(k_grid=(10, 20), window=30)``."""

    k_grid: tuple[int, ...] = (10, 20, 30, 40)  # neighbour counts tried; each head keeps its best
    window: int = 30  # single episode only: frames within ±window of the query are not neighbours
    eps: float = 1e-8  # added to the cosine distance before inverting, so exact matches get finite weight
    # dtype of the similarity matmul and top-k. float64 (default) reproduces the reference loop to ~1e-12 on
    # any machine; float32 is at most a few % faster (the top-k dominates) and near-ties can flip (~1e-4).
    dtype: str = "float64"
    max_chunk_bytes: int = 256 * 2**20  # memory budget for one chunk of heads

    def __post_init__(self) -> None:
        grid = tuple(self.k_grid)
        if not grid or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in grid):
            raise ValueError(f"k_grid must be a non-empty tuple of positive ints, got {self.k_grid!r}")
        if len(set(grid)) != len(grid):
            raise ValueError(f"k_grid has repeated values: {self.k_grid!r}")
        object.__setattr__(self, "k_grid", tuple(sorted(grid)))
        if not isinstance(self.window, int) or self.window < 0:
            raise ValueError(f"window must be an int >= 0, got {self.window!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {self.dtype!r}")
        if self.max_chunk_bytes < 1:
            raise ValueError(f"max_chunk_bytes must be positive, got {self.max_chunk_bytes}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


def neighbour_mask(episodes: torch.Tensor, frames: torch.Tensor, window: int) -> tuple[torch.Tensor, str]:
    """``neighbour_mask(ep, fr, 30)`` -> ((N, N) bool, protocol): True where j may be a neighbour of i.

    Several episodes: j must come from another episode. One episode: |frame_i − frame_j| > window.
    Raises if some frame would have no neighbour at all.
    """
    if torch.unique(episodes).numel() > 1:
        allowed = episodes[:, None] != episodes[None, :]
        protocol = "leave-one-episode-out"
    else:
        allowed = (frames[:, None] - frames[None, :]).abs() > window
        protocol = f"leave-one-frame-out (±{window} frames excluded)"
    counts = allowed.sum(dim=1)
    if counts.numel() and int(counts.min()) < 1:
        lonely = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"{protocol}: {len(lonely)} frames (e.g. index {lonely[0]}) have no allowed neighbour; "
                         "record more frames/episodes or use a smaller window")
    return allowed, protocol


def check_k_grid(k_grid: tuple[int, ...], allowed: torch.Tensor) -> None:
    """Warn when a k of the grid exceeds the neighbours some frames have (those frames use all they have)."""
    fewest = int(allowed.sum(dim=1).min())
    too_big = [k for k in k_grid if k > fewest]
    if too_big:
        log.warning("k in %s exceeds the %d neighbours available to some frames; those frames use all of "
                    "their neighbours for that k", too_big, fewest)


def mean_predictor_mse(y: torch.Tensor, allowed: torch.Tensor) -> float:
    """MSE of predicting each frame by the mean action of its allowed neighbours (the R²-like baseline)."""
    weights = allowed.to(y.dtype)  # (N, N)
    pred = (weights @ y) / weights.sum(dim=1, keepdim=True)  # (N, A)
    return float(((pred - y) ** 2).mean())


def knn_errors(sim: torch.Tensor, y: torch.Tensor, allowed: torch.Tensor | None, k_grid: tuple[int, ...],
               eps: float) -> torch.Tensor:
    """``knn_errors(sim, y, allowed, (10, 20), 1e-8)`` -> (H, len(k_grid)) float64 MSE.

    ``sim`` (H, N, N) cosine similarities; ``allowed`` (N, N) bool, whose False pairs are
    set to -inf in ``sim`` in place (``None``: already done); ``y`` (N, A) float64 actions.
    A frame with fewer than k allowed neighbours uses all of them (the -inf entries that
    fill its top-k get weight zero).
    """
    if allowed is not None:
        sim.masked_fill_(~allowed, float("-inf"))
    n = sim.shape[-1]
    k_max = min(max(k_grid), n)
    top_sim, top_idx = sim.topk(k_max, dim=-1)  # (H, N, k_max), most similar first
    top_sim = top_sim.to(torch.float64)
    valid = torch.isfinite(top_sim)
    dist = (1.0 - top_sim.masked_fill(~valid, 0.0)).clamp_min(0.0)
    weight = torch.where(valid, 1.0 / (dist + eps), torch.zeros_like(dist))  # (H, N, k_max)
    # One top-k serves the whole grid: the sums over the first k neighbours are prefix sums at column k - 1.
    cols = torch.tensor([min(k, k_max) - 1 for k in k_grid])
    sum_w = weight.cumsum(dim=-1)[..., cols]  # (H, N, n_k)
    # Gathering y transposed keeps the k axis innermost, so the product and cumsum run over contiguous memory.
    sum_wy = (y.T.contiguous()[:, top_idx] * weight).cumsum(dim=-1)[..., cols]  # (A, H, N, n_k)
    pred = sum_wy / sum_w  # (A, H, N, n_k)
    return ((pred - y.T[:, None, :, None]) ** 2).mean(dim=(0, 2))  # (H, n_k)


# One chunk's (h, N, N) similarity block is read by the top-k right after the matmul writes it; keeping it
# within a few MiB (last-level cache) measured ~10-20% faster than one big block on a 16 MiB-L3 CPU.
_CACHE_BYTES = 8 * 2**20


def _chunk_heads(n: int, d: int, n_actions: int, k_max: int, config: KNNConfig) -> int:
    elt = torch.finfo(config.torch_dtype).bits // 8
    per_head = 2 * n * n * elt + n * d * elt + 3 * n * k_max * (n_actions + 1) * 8
    return max(1, min(config.max_chunk_bytes // per_head, _CACHE_BYTES // (n * n * elt)))


def knn_head_errors(acts: torch.Tensor, y: torch.Tensor, allowed: torch.Tensor, config: KNNConfig) -> torch.Tensor:
    """(N, H, D) activations -> (H, len(k_grid)) float64 MSE, chunked over heads."""
    n, n_heads, d = acts.shape
    chunk = _chunk_heads(n, d, y.shape[1], min(max(config.k_grid), n), config)
    bias = torch.zeros(n, n, dtype=config.torch_dtype).masked_fill_(~allowed, float("-inf"))  # (N, N)
    out = []
    for start in range(0, n_heads, chunk):
        x = unit_rows(acts[:, start : start + chunk].transpose(0, 1).to(config.torch_dtype).contiguous())  # (h, N, D)
        # baddbmm adds the 0/-inf mask in the matmul's own pass instead of a second pass over (h, N, N).
        sim = torch.baddbmm(bias.expand(x.shape[0], n, n), x, x.transpose(1, 2))  # (h, N, N)
        out.append(knn_errors(sim, y, None, config.k_grid, config.eps))
    return torch.cat(out, dim=0)


def scores_from_errors(heads: list[Head], errors: torch.Tensor, baseline: float, config: KNNConfig, *,
                       name: str, layout: HeadLayout | None, probe: str | None, fingerprint: str | None,
                       data: str, meta: dict) -> HeadScores:
    """Build the ``HeadScores`` of a kNN run from (H, n_k) errors (shared by the fast and reference scorers)."""
    best_err, best_col = errors.min(dim=1)
    best_k = torch.tensor(config.k_grid, dtype=torch.float64)[best_col]
    skill = 1.0 - best_err / baseline if baseline > 0 else torch.full_like(best_err, float("nan"))
    columns = {name: skill.numpy(), f"{name}/mse": best_err.numpy(), f"{name}/k": best_k.numpy()}
    directions = {name: True, f"{name}/mse": False, f"{name}/k": False}
    meta = {**meta, "k_grid": list(config.k_grid), "window": config.window, "eps": config.eps,
            "dtype": config.dtype, "mean_predictor_mse": baseline}
    return HeadScores(tuple(heads), columns, directions, layout=layout, method="knn", probe=probe,
                      fingerprint=fingerprint, data=data, meta=meta)


def describe_data(n: int, episodes: torch.Tensor, protocol: str) -> str:
    """Default data description, e.g. ``"300 frames from 20 episodes, leave-one-episode-out"``."""
    return f"{n} frames from {torch.unique(episodes).numel()} episodes, {protocol}"


def knn_scores(acts, actions, episodes=None, heads=None, *, frames=None, config: KNNConfig = KNNConfig(),
               probe: str | None = None, layout: HeadLayout | None = None, fingerprint: str | None = None,
               data: str | None = None) -> HeadScores:
    """``knn_scores(acts, actions, episodes, heads)`` -> ``HeadScores`` with ``knn``, ``knn/mse``, ``knn/k``.

    ``acts`` (N, H, D) with ``heads`` naming H, or ``{tower: (N, L, H, D)}``; ``actions``
    (N, A); ``episodes`` (N,) ids or ``None`` (one episode, frames in time order unless
    ``frames`` gives their indices). With ``probe="visual"`` the columns are ``knn:visual``...
    """
    blocks = head_blocks(acts, heads, layout, dtype=config.torch_dtype)
    n = blocks[0].acts.shape[0]
    y, ep, fr = prepare_targets(actions, episodes, n, frames)
    allowed, protocol = neighbour_mask(ep, fr, config.window)
    check_k_grid(config.k_grid, allowed)
    baseline = mean_predictor_mse(y, allowed)
    all_heads: list[Head] = []
    errors = []
    for block in blocks:
        all_heads.extend(block.heads)
        errors.append(knn_head_errors(block.acts, y, allowed, config))
        log.debug("kNN-scored %d heads of d_head %d", len(block.heads), block.acts.shape[-1])
    name = "knn" if probe is None else f"knn:{probe}"
    meta = {"protocol": protocol, "n_frames": n, "n_episodes": int(torch.unique(ep).numel())}
    return scores_from_errors(all_heads, torch.cat(errors), baseline, config, name=name, layout=layout,
                              probe=probe, fingerprint=fingerprint, data=data or describe_data(n, ep, protocol),
                              meta=meta)

"""The released Robotic Steering head selection, on plain arrays: ``select_heads_knn``.

The public release (openpi_robotv, ``head_tuning/knn/selection.py`` and ``model.py``)
scores heads like ``knn.knn_scores`` but *selects* them by other rules than robosteer's
own variant (``HeadMask.select`` on the best-k ``knn`` column, or ``greedy.greedy_select``):

1. **Per-k ranking.** For every k of the grid separately, each unit (a head; with
   ``unit="layer"`` a whole layer, its heads concatenated) is scored alone at that k and
   the units are sorted by MSE, ties in unit order (layer-major).
2. **Search at each k.** ``mode="topk"``: the N best units of k's ranking are scored
   *jointly* at k. ``mode="best_add"``: greedy forward selection at k, candidates tried in
   k's ranking order, each step adding the one with the lowest joint MSE (strict <, the
   earlier candidate wins ties), for exactly N steps: no early stop, even if the error rises.
3. **Best k.** The k whose searched set has the lowest joint MSE; strict <, so on a tie the
   first k of the grid, in the order given, wins.
4. **Exclusions.** ``excluded`` units take part in ranking and search; afterwards they are
   dropped from the set, which is refilled from best k's ranking up to min(N, units - excluded).
5. **Final scores.** The final set is re-scored at every k (``per_k_mse``); ``cv_mse`` is
   its value at best k, which is not chosen again.

Joint scoring concatenates the units' raw activations (no per-head normalisation), so a
head with large activations weighs more in the joint cosine. The Gram matrix of a
concatenation is the sum of the units' Gram matrices, so a set is scored from (N, N)
sums without building the long vectors; neighbours, weights and errors then come from
``knn.knn_errors``, and single units from ``knn.knn_head_errors`` (the numbers of
``knn_scores``). With one episode, a frame whose every other frame lies within ±window
has no neighbour: the released code leaves it out of the mean (``knn_scores`` raises),
and so does this; a frame with fewer than k neighbours uses all it has (the released
single-episode loop crashes there).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from robosteer.circuits.activations import head_blocks, prepare_targets
from robosteer.circuits.knn import KNNConfig, knn_errors, knn_head_errors
from robosteer.sites import Head, HeadLayout

log = logging.getLogger(__name__)

MODES = ("topk", "best_add")  # the released selection modes
UNITS = ("head", "layer")  # the released unit modes
METRICS = ("cosine", "euclidean")  # the released distances (the release also has learned metrics, removed since)
EPS = KNNConfig.eps  # added to the distance before inverting (the release's 1e-8)
_CHUNK_BYTES = 256 * 2**20  # memory budget for one batch of candidate sets


@dataclass(frozen=True)
class KNNSelection:
    """The result of ``select_heads_knn``; ``selection.to_mask(layout)`` gives the ``HeadMask``."""

    heads: list  # chosen units, selection order: (layer, head) pairs; layer mode: layers; {tower: acts}: Head
    best_k: int  # the k whose searched set scored best (first k of the grid on ties)
    cv_mse: float  # per_k_mse[best_k]
    per_k_mse: dict[int, float]  # the final set's joint MSE at every k of the grid
    search_mse: dict[int, float]  # each k's searched set's joint MSE, before exclusions (what chose best_k)
    rankings: dict[int, list]  # per k: [(single-unit MSE, unit), ...] best first
    mode: str  # "topk" or "best_add"
    unit: str  # "head" or "layer"
    n: int  # units asked for
    heads_per_layer: int | None  # heads of each layer of the input (to expand layers into heads)
    protocol: str  # "leave-one-episode-out" or the single-episode window protocol
    metric: str = "cosine"
    window: int = 30
    excluded: tuple = ()  # units left out after the search, as given

    def trainable_head_indices(self) -> list[list[int]]:
        """The released ``heads.json`` list: ``[[layer, head], ...]`` in selection order (layers expanded)."""
        if self.unit == "layer":
            return [[layer, h] for layer in self.heads for h in range(self.heads_per_layer)]
        if self.heads and isinstance(self.heads[0], Head):
            towers = {h.tower for h in self.heads}
            if len(towers) > 1:
                raise ValueError(f"[layer, head] pairs name no tower; these heads span towers {sorted(towers)}")
            return [[h.layer, h.head] for h in self.heads]
        return [[layer, head] for layer, head in self.heads]

    def to_mask(self, layout: HeadLayout, tower: str = "llm", *, fingerprint: str | None = None, data: str = ""):
        """``selection.to_mask(vla.head_layout)`` -> ``HeadMask`` (pairs and layers are read in ``tower``)."""
        from robosteer.masks import HeadMask

        if self.heads and isinstance(self.heads[0], Head):
            heads = list(self.heads)
        else:
            heads = [Head(tower, layer, head) for layer, head in self.trainable_head_indices()]
        note = f"released kNN selection ({self.mode}, {self.unit}s, k={self.best_k}, cv_mse={self.cv_mse:.6g})"
        return HeadMask.from_heads(heads, layout, method="knn" if self.mode == "topk" else "knn-best_add",
                                   fingerprint=fingerprint, data=f"{note}; {data}" if data else note)


class _Pool:
    """The candidate units (blocks of equal width), the targets and the neighbour mask of one selection."""

    def __init__(self, blocks: list[torch.Tensor], y: torch.Tensor, allowed: torch.Tensor, lonely: torch.Tensor,
                 metric: str, window: int) -> None:
        self.blocks = blocks  # each (N, U_b, D_b) float64
        self.where = [(b, i) for b, x in enumerate(blocks) for i in range(x.shape[1])]  # unit -> (block, index)
        self.y = y  # (N, A) float64
        # A frame without neighbours may use itself: its prediction is its own action (error 0), and
        # rescaling the mean by N / (N - lonely) leaves it out of the average, as the release does.
        self.allowed = allowed | torch.diag(lonely)  # (N, N) bool
        self.scale = allowed.shape[0] / (allowed.shape[0] - int(lonely.sum()))
        self.metric = metric
        self.window = window

    def __len__(self) -> int:
        return len(self.where)

    def single(self, k_grid: tuple[int, ...]) -> np.ndarray:
        """(U, n_k) MSE of every unit alone, columns in ``k_grid`` order."""
        if self.metric == "euclidean":
            return self.joint(None, list(range(len(self))), k_grid)
        config = KNNConfig(k_grid=k_grid, window=self.window, eps=EPS)
        cols = [config.k_grid.index(k) for k in k_grid]  # KNNConfig sorts its grid
        errors = torch.cat([knn_head_errors(x, self.y, self.allowed, config) for x in self.blocks])
        return errors[:, cols].numpy() * self.scale

    def gram(self, units: Sequence[int]) -> torch.Tensor:
        """(N, N) raw Gram matrix of the units' concatenated activations."""
        n = self.y.shape[0]
        out = torch.zeros(n, n, dtype=torch.float64)
        for u in units:
            b, i = self.where[u]
            x = self.blocks[b][:, i, :]  # (N, D)
            out.addmm_(x, x.T)
        return out

    def set_errors(self, units: Sequence[int], k_grid: tuple[int, ...]) -> np.ndarray:
        """(n_k,) joint MSE of one set of units."""
        return self._errors(self.gram(units)[None], k_grid)[0]

    def joint(self, base: torch.Tensor | None, candidates: Sequence[int], k_grid: tuple[int, ...]) -> np.ndarray:
        """(C, n_k) joint MSE of the set with Gram ``base`` (None: empty) plus each candidate in turn."""
        out = np.empty((len(candidates), len(k_grid)))
        n, n_actions = self.y.shape
        per_set = 3 * n * n * 8 + 4 * n * min(max(k_grid), n) * (n_actions + 1) * 8
        chunk = max(1, _CHUNK_BYTES // per_set)
        by_block: dict[int, list[int]] = {}
        for pos, u in enumerate(candidates):
            by_block.setdefault(self.where[u][0], []).append(pos)
        for b, positions in by_block.items():
            for start in range(0, len(positions), chunk):
                rows = positions[start : start + chunk]
                x = self.blocks[b][:, [self.where[candidates[p]][1] for p in rows], :].transpose(0, 1)  # (c, N, D)
                gram = x @ x.transpose(1, 2) if base is None else torch.baddbmm(base.expand(len(rows), n, n), x,
                                                                                 x.transpose(1, 2))  # (c, N, N)
                out[rows] = self._errors(gram, k_grid)
        return out

    def _errors(self, gram: torch.Tensor, k_grid: tuple[int, ...]) -> np.ndarray:
        diag = gram.diagonal(dim1=1, dim2=2)  # (c, N) squared norms
        if self.metric == "cosine":
            norms = diag.clamp_min(0.0).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
            sim = gram / norms[:, :, None] / norms[:, None, :]  # (c, N, N)
        else:  # knn_errors reads the distance as 1 - similarity
            sim = 1.0 - (diag[:, :, None] + diag[:, None, :] - 2.0 * gram).clamp_min(0.0).sqrt()
        return knn_errors(sim, self.y, self.allowed, k_grid, EPS).numpy() * self.scale


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def _check_ids(x, name: str, n: int) -> None:
    if x is not None and tuple(np.shape(x)) != (n,):
        raise ValueError(f"{name} must be (N,) = ({n},), one per frame of activations; got shape {tuple(np.shape(x))}")


def _units(activations, unit: str) -> tuple[list[torch.Tensor], list, int | None]:
    """activations -> (blocks (N, U_b, D_b) float64, unit names in order, heads per layer)."""
    if isinstance(activations, Mapping):
        if unit == "layer":
            raise ValueError("unit='layer' takes one (N, layers, heads, d) array as activations, not a {tower: ...} dict")
        blocks = head_blocks(activations, dtype=torch.float64)
        return [b.acts for b in blocks], [h for b in blocks for h in b.heads], None
    if isinstance(activations, torch.Tensor):
        x = activations.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            x = torch.as_tensor(np.asarray(activations, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise ValueError(f"activations must be a float array or tensor, got {type(activations).__name__}") from err
    if x.ndim != 4 or 0 in x.shape:
        raise ValueError(f"activations must be (N, layers, heads, d) with no empty axis, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"activations contain NaN/inf in {int((~torch.isfinite(x)).any(dim=(1, 2, 3)).sum())} frames")
    n, n_layers, n_heads, d = x.shape
    if unit == "layer":
        return [x.reshape(n, n_layers, n_heads * d)], list(range(n_layers)), n_heads
    return [x.reshape(n, n_layers * n_heads, d)], [(l, h) for l in range(n_layers) for h in range(n_heads)], n_heads


def _excluded_units(excluded, names: list, unit: str) -> set[int]:
    index = {name: i for i, name in enumerate(names)}
    keyed = isinstance(names[0], Head)
    out = set()
    for item in excluded:
        if keyed:
            try:
                key = Head.parse(item)
            except ValueError as err:
                raise ValueError(f"excluded: {err}") from err
        elif unit == "layer":
            key = item if isinstance(item, (int, np.integer)) and not isinstance(item, bool) else None
        else:
            key = tuple(int(v) for v in item) if isinstance(item, (tuple, list)) and len(item) == 2 \
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in item) else None
        if key not in index:
            what = "layer indices" if unit == "layer" else ("heads such as 'llm.L3H1'" if keyed else "(layer, head) pairs")
            raise ValueError(f"excluded must hold {what} of activations ({len(names)} {unit}s); got {item!r}")
        out.add(index[key])
    return out


def _neighbours(ep: torch.Tensor, fr: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """((N, N) allowed pairs, (N,) frames without any, protocol), as the release's cross-validation has them."""
    if torch.unique(ep).numel() > 1:
        allowed = ep[:, None] != ep[None, :]
        protocol = "leave-one-episode-out"
    else:
        allowed = (fr[:, None] - fr[None, :]).abs() > window
        protocol = f"leave-one-frame-out (±{window} frames excluded)"
    counts = allowed.sum(dim=1)
    lonely = counts == 0
    if bool(lonely.all()):
        raise ValueError(f"{protocol}: no frame has a neighbour; record more frames/episodes or use a smaller window")
    if bool(lonely.any()):
        log.warning("%s: %d frames have no neighbour and are left out of every MSE, as the released code does",
                    protocol, int(lonely.sum()))
    return allowed, lonely, protocol


def select_heads_knn(activations, actions, episode_ids=None, frame_ids=None, *, k_grid=(10, 20, 30, 40),
                     n: int = 20, mode: str = "topk", window: int = 30, excluded=(), unit: str = "head",
                     metric: str = "cosine") -> KNNSelection:
    """``select_heads_knn(acts, actions, episodes, n=20)`` -> ``KNNSelection``, the released selection.

    ``activations`` (N, layers, heads, d) float (numpy or torch), or ``{tower: (N, L, H, d)}``
    (head mode; heads are then ``Head`` objects); ``actions`` (N, A); ``episode_ids`` (N,)
    (None: one episode, then ``frame_ids`` (N,) are the frame indices the ±``window``
    exclusion reads, default 0..N-1). ``excluded``: (layer, head) pairs, layers in layer mode.
    """
    _check_choice("mode", mode, MODES)
    _check_choice("unit", unit, UNITS)
    _check_choice("metric", metric, METRICS)
    grid = tuple(k_grid) if isinstance(k_grid, (tuple, list)) else None
    if not grid or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in grid) or \
            len(set(grid)) != len(grid):
        raise ValueError(f"k_grid must be a non-empty sequence of distinct positive ints, got {k_grid!r}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValueError(f"window must be an int >= 0, got {window!r}")
    blocks, names, heads_per_layer = _units(activations, unit)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(names):
        raise ValueError(f"n must be an int from 1 to the {len(names)} {unit}s of activations, got {n!r}")
    frames = blocks[0].shape[0]
    _check_ids(episode_ids, "episode_ids", frames)
    _check_ids(frame_ids, "frame_ids", frames)
    y, ep, fr = prepare_targets(actions, episode_ids, frames, frame_ids)
    allowed, lonely, protocol = _neighbours(ep, fr, window)
    fewest = int(allowed.sum(dim=1)[~lonely].min())
    if max(grid) > fewest:
        log.warning("k in %s exceeds the %d neighbours some frames have; they use all of them",
                    [k for k in grid if k > fewest], fewest)
    drop = _excluded_units(excluded, names, unit)
    target = min(n, len(names) - len(drop))
    if target < 1:
        raise ValueError(f"excluded leaves no {unit} to select: all {len(names)} are excluded")
    pool = _Pool(blocks, y, allowed, lonely, metric, window)

    single = pool.single(grid)  # (U, n_k)
    rankings = {k: [int(u) for u in np.argsort(single[:, c], kind="stable")] for c, k in enumerate(grid)}
    search_mse: dict[int, float] = {}
    chosen_at: dict[int, list[int]] = {}
    for k in grid:
        ranking = rankings[k]
        if mode == "topk":
            chosen_at[k] = ranking[:n]
            search_mse[k] = float(pool.set_errors(chosen_at[k], (k,))[0])
        else:
            chosen_at[k], search_mse[k] = _best_add(pool, ranking, n, k)
        log.info("k=%d: %s set of %d %ss, joint mse %.6g", k, mode, n, unit, search_mse[k])
    best_k, best = None, math.inf
    for k in grid:
        if search_mse[k] < best:  # strict: the first k of the grid wins ties
            best_k, best = k, search_mse[k]
    if best_k is None:
        raise ValueError(f"no k of {grid} gave a finite joint MSE: {search_mse}")

    final = [u for u in chosen_at[best_k] if u not in drop]
    for u in rankings[best_k]:
        if len(final) >= target:
            break
        if u not in drop and u not in final:
            final.append(u)
    per_k = dict(zip(grid, (float(v) for v in pool.set_errors(final, grid))))
    return KNNSelection(
        heads=[names[u] for u in final], best_k=best_k, cv_mse=per_k[best_k], per_k_mse=per_k,
        search_mse=search_mse, rankings={k: [(float(single[u, c]), names[u]) for u in rankings[k]]
                                         for c, k in enumerate(grid)},
        mode=mode, unit=unit, n=n, heads_per_layer=heads_per_layer, protocol=protocol, metric=metric, window=window,
        excluded=tuple(excluded))


def _best_add(pool: _Pool, ranking: list[int], n: int, k: int) -> tuple[list[int], float]:
    """Greedy forward selection at one k for exactly n steps: (units in order added, joint MSE of the last step)."""
    chosen: list[int] = []
    base = None
    mse = math.inf
    for _ in range(n):
        candidates = [u for u in ranking if u not in chosen]
        errors = pool.joint(base, candidates, (k,))[:, 0]  # candidates in ranking order
        r = int(np.argmin(errors))  # the first minimum: the release's strict < over the ranking
        chosen.append(candidates[r])
        mse = float(errors[r])
        base = pool.gram(chosen) if base is None else base + pool.gram([candidates[r]])
    return chosen, mse

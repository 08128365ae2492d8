"""The input every head scorer takes: per-head activations, actions, episode ids.

Primary form: ``acts`` of shape (N, H, D) — N frames (keyframes), H heads, D = d_head —
as a torch tensor or numpy array, plus ``heads``: a list of ``Head`` naming the H axis
in order. Towers with different ``d_head`` (LLM 128, DINO 64, SigLIP 72) cannot share
one (N, H, D) array, so the second accepted form is a dict ``{tower: (N, L, H, D)}``
as the hook layer records it; ``flatten_tower`` turns one tower into the primary form
and ``head_blocks`` turns either form into blocks of equal ``d_head`` for the scorers.
``from_cache`` builds the dict form from a ``run_with_cache`` result (``hook_z`` at one
token position per example).

Targets: ``actions`` (N, A) float (a 1-D (N,) array is one action dimension), and
``episodes`` (N,) int ids — or ``None`` for a single episode, in which case frames are
assumed in time order unless ``frames`` gives their indices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from robosteer.sites import Head, HeadLayout, hook_name

log = logging.getLogger(__name__)


def _as_tensor(x, name: str, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=dtype)
    try:
        return torch.as_tensor(np.asarray(x), dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a tensor or array, got {type(x).__name__}: {err}") from err


def flatten_tower(acts, tower: str) -> tuple[torch.Tensor, list[Head]]:
    """``flatten_tower(acts_llm, "llm")``: (N, L, H, D) -> ((N, L*H, D), heads in layer-major order)."""
    x = _as_tensor(acts, f"activations of tower {tower!r}", torch.float32)
    if x.ndim != 4:
        raise ValueError(f"activations of tower {tower!r} must be (N, layers, heads, d_head), got shape {tuple(x.shape)}")
    n, n_layers, n_heads, d = x.shape
    heads = [Head(tower, layer, head) for layer in range(n_layers) for head in range(n_heads)]
    return x.reshape(n, n_layers * n_heads, d), heads


def from_cache(cache: Mapping[str, torch.Tensor], layout: HeadLayout, position=-1,
               towers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``from_cache(cache, vla.head_layout, position=-1)`` -> ``{tower: (B, L, H, D)}`` from the ``hook_z`` sites.

    ``position`` is one token index for the whole batch or a (B,) tensor of indices (one
    per example, e.g. the first action token of each). Towers without ``hook_z`` entries in
    the cache are skipped unless named in ``towers``. Trailing layers missing from the cache
    (the vision towers' last block never runs) are left out: the result then has fewer
    than the layout's layers, and those heads go unscored.
    """
    out = {}
    for tower in towers if towers is not None else layout.names:
        n_layers, n_heads = layout.shape(tower)
        names = [hook_name(tower, layer, "hook_z") for layer in range(n_layers)]
        present = [name in cache for name in names]
        if not any(present):
            if towers is None:
                continue
            raise KeyError(f"cache holds no hook_z site of tower {tower!r}, e.g. {names[0]}")
        n_found = present.index(False) if not all(present) else n_layers
        if any(present[n_found:]):
            raise KeyError(f"cache lacks {names[n_found]} but holds later layers of tower {tower!r}; "
                           "record every layer, or pass the activations yourself")
        if n_found < n_layers:
            # The vision towers' last block does not feed the features, so its hooks never fire.
            log.info("tower %s: layers %d-%d are not in the cache; their heads stay unscored", tower, n_found,
                     n_layers - 1)
        names = names[:n_found]
        per_layer = []
        for name in names:
            z = cache[name]  # (B, S, H, D)
            if z.ndim != 4 or z.shape[2] != n_heads:
                raise ValueError(f"{name} has shape {tuple(z.shape)}; expected (batch, pos, {n_heads}, d_head)")
            if isinstance(position, int):
                per_layer.append(z[:, position])  # (B, H, D)
            else:
                index = torch.as_tensor(position, dtype=torch.int64)
                if index.shape != (z.shape[0],):
                    raise ValueError(f"position must be an int or (B,) = ({z.shape[0]},) indices, got {tuple(index.shape)}")
                per_layer.append(z[torch.arange(z.shape[0]), index])  # (B, H, D)
        out[tower] = torch.stack(per_layer, dim=1)  # (B, L, H, D)
    if not out:
        raise KeyError("the cache holds no hook_z site of any tower; record with names_filter=... 'hook_z'")
    return out


@dataclass(frozen=True)
class HeadBlock:
    """Heads sharing one ``d_head``: ``acts`` (N, H, D) float, ``heads`` naming the H axis."""

    heads: tuple[Head, ...]
    acts: torch.Tensor  # (N, H, D)


def head_blocks(acts, heads: Sequence[Head | str] | None = None, layout: HeadLayout | None = None,
                dtype: torch.dtype = torch.float32) -> list[HeadBlock]:
    """``head_blocks(acts, heads)`` or ``head_blocks({"llm": acts})`` -> validated blocks of equal d_head.

    Raises ``ValueError`` on wrong shapes, heads that do not match the H axis or the
    layout, repeated heads and non-finite activations (naming the offending heads).
    """
    if isinstance(acts, Mapping):
        if heads is not None:
            raise ValueError("pass heads only with an (N, H, D) array; a {tower: (N, L, H, D)} dict names its own heads")
        blocks = [flatten_tower(tower_acts, tower)[::-1] for tower, tower_acts in acts.items()]
        if len({x.shape[0] for _, x in blocks}) > 1:
            shapes = {hs[0].tower: tuple(x.shape) for hs, x in blocks}
            raise ValueError(f"towers disagree on the number of frames N: flattened shapes {shapes}")
        # Towers with the same d_head go in one block so the scorers batch them together.
        by_dim: dict[int, tuple[list[Head], list[torch.Tensor]]] = {}
        for tower_heads, x in blocks:
            entry = by_dim.setdefault(x.shape[-1], ([], []))
            entry[0].extend(tower_heads)
            entry[1].append(x)
        pairs = [(hs, torch.cat(xs, dim=1).to(dtype)) for hs, xs in by_dim.values()]
    else:
        x = _as_tensor(acts, "acts", dtype)
        if x.ndim != 3:
            raise ValueError(f"acts must be (N, heads, d_head), got shape {tuple(x.shape)}; "
                             "for (N, layers, heads, d_head) pass {tower: acts} or use flatten_tower")
        if heads is None:
            if layout is None or len(layout) != x.shape[1]:
                raise ValueError(f"acts has {x.shape[1]} heads: pass heads=[...] naming them "
                                 f"(or a layout with exactly that many heads)")
            heads = layout.heads()
        parsed = [Head.parse(h) for h in heads]
        if len(parsed) != x.shape[1]:
            raise ValueError(f"acts shape {tuple(x.shape)} has {x.shape[1]} heads but {len(parsed)} heads were named")
        pairs = [(parsed, x)]
    out = []
    all_heads: list[Head] = []
    for hs, x in pairs:
        if x.shape[0] == 0:
            raise ValueError("no frames: acts has N = 0")
        bad = ~torch.isfinite(x).all(dim=(0, 2))  # (H,)
        if bad.any():
            names = [str(hs[i]) for i in torch.nonzero(bad).flatten().tolist()]
            raise ValueError(f"activations contain NaN/inf for {len(names)} heads, e.g. {names[:5]}")
        if layout is not None:
            for h in hs:
                layout.validate(h)
        all_heads.extend(hs)
        out.append(HeadBlock(tuple(hs), x))
    if len(set(all_heads)) != len(all_heads):
        raise ValueError("the same head appears twice in acts")
    return out


def prepare_targets(actions, episodes, n: int, frames=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``prepare_targets(actions, episodes, N)`` -> (actions (N, A) float64, episodes (N,) int64, frames (N,) int64)."""
    y = _as_tensor(actions, "actions", torch.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"actions must be (N, A) with N = {n} frames like acts, got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("actions contain NaN/inf")
    return y, _ids(episodes, "episodes", n, torch.zeros(n, dtype=torch.int64)), \
        _ids(frames, "frames", n, torch.arange(n, dtype=torch.int64))


def _ids(x, name: str, n: int, default: torch.Tensor) -> torch.Tensor:
    """(N,) int64 ids (episode ids or frame indices), or ``default`` when ``x`` is None."""
    if x is None:
        return default
    try:
        raw = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a tensor or array of integer ids, got {type(x).__name__}: {err}") from err
    if raw.is_floating_point():  # float ids are fine when integral (1.0); 1.5 would be silently truncated
        bad = raw[~torch.isfinite(raw) | (raw != raw.round())]
        if bad.numel():
            raise ValueError(f"{name} must be integer ids (floats only with integral values), got non-integral "
                             f"values such as {bad[:3].tolist()}; map them to integers first (e.g. np.unique(..., "
                             "return_inverse=True)[1])")
    ids = raw.to(torch.int64)
    if ids.shape != (n,):
        raise ValueError(f"{name} must be (N,) with N = {n} like acts, got shape {tuple(ids.shape)}")
    return ids


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last axis; an all-zero vector stays zero (cosine 0 with everything)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)

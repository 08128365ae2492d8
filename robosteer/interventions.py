"""Head-level interventions: ablate (zero or mean), patch from another run, steer by adding a vector.

Each function returns a list of ``(hook_name, fn)`` pairs for ``vla.hooks(fwd_hooks=...)``
or ``vla.run_with_hooks``; all act on ``hook_z`` (a head's output before the output
projection) and touch only the named heads, at all or at given positions. They share
``head_slice_hooks`` (one hook per site, writing head slices of a copy of the activation) and
``group_by_site`` (heads grouped by their ``hook_z`` site), which activation patching
(``circuits/patching.py``) uses too.

Usage::

    with vla.hooks(fwd_hooks=ablate_heads(["llm.L1H2", "dino.L0H3"])):
        out = vla(input_ids=ids, pixel_values=pv)
    _, clean = vla.run_with_cache(input_ids=ids, pixel_values=clean_pv, names_filter="*hook_z")
    out = vla.run_with_hooks(input_ids=ids, pixel_values=corrupt_pv, fwd_hooks=patch_heads(heads, clean))
    out = vla.run_with_hooks(..., fwd_hooks=steer_heads({"llm.L1H2": v}, scale=4.0))
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch

from .sites import Head, HookSite

# edit(out, act, site, name, item): write head slices of ``out`` (a clone of ``act``); ``item`` is groups[name]
SliceEdit = Callable[[torch.Tensor, torch.Tensor, HookSite, str, Any], None]


def head_slice_hooks(groups: Mapping[str, Any], edit: SliceEdit) -> list:
    """``[(hook name, fn)]``, one per entry of ``groups``: ``fn`` copies the activation, lets
    ``edit(out, act, site, name, groups[name])`` write the heads' slices of the copy, and returns it."""
    hooks = []
    for name, item in groups.items():
        def fn(act, site, name=name, item=item):
            out = act.clone()
            edit(out, act, site, name, item)
            return out
        hooks.append((name, fn))
    return hooks


def group_by_site(pairs: Iterable[tuple[Head | str, Any]], unique: bool = False) -> dict[str, list]:
    """``group_by_site([(head, value), ...])`` -> ``{head's hook_z name: [value, ...]}``, sites and values in the
    order first seen (``unique``: a value that is already in its site's list is dropped): the ``groups`` of
    ``head_slice_hooks``."""
    groups: dict[str, list] = {}
    for head, value in pairs:
        values = groups.setdefault(Head.parse(head).hook_z, [])
        if not unique or value not in values:
            values.append(value)
    return groups


def _group(heads: Iterable[Head | str]) -> dict[str, list[int]]:
    """Head list -> {hook_z name: [head indices]} (order kept, duplicates dropped)."""
    return group_by_site(((head, head.head) for head in map(Head.parse, heads)), unique=True)


def _pos(positions) -> slice | torch.Tensor:
    if positions is None:
        return slice(None)
    if isinstance(positions, slice):
        return positions
    if isinstance(positions, int):
        return torch.tensor([positions])
    return torch.as_tensor(positions, dtype=torch.long)


def _check_heads(act: torch.Tensor, idx: list[int], site: HookSite) -> None:
    if max(idx) >= act.shape[2]:
        raise ValueError(f"{site} has {act.shape[2]} heads; head index {max(idx)} does not exist")


def ablate_heads(heads: Iterable[Head | str], how: str = "zero", means: Mapping[str, torch.Tensor] | None = None,
                 positions=None) -> list:
    """Replace the heads' outputs by zero (``how="zero"``) or by their mean (``how="mean"``, from ``means``).

    ``means`` maps hook_z names to tensors broadcastable to ``(B, S, H, D)``, e.g.
    ``cache.mean()`` of a reference run (mean over the batch) or ``cache.mean((0, 1))`` (over positions too).
    """
    if how not in ("zero", "mean"):
        raise ValueError(f"how must be 'zero' or 'mean', got {how!r}")
    if how == "mean" and means is None:
        raise ValueError("mean ablation needs means= (e.g. cache.mean() from run_with_cache over reference inputs)")
    pos = _pos(positions)

    def edit(out, act, site, name, idx):
        _check_heads(act, idx, site)
        if how == "zero":
            out[:, pos, idx] = 0
        else:
            if name not in means:
                raise KeyError(f"means has no entry for {name}")
            mean = means[name].to(act.dtype)
            try:
                target = torch.broadcast_to(mean, act.shape)
            except RuntimeError as err:
                raise ValueError(f"mean for {name} has shape {tuple(mean.shape)}, which does not broadcast to "
                                 f"the activation's {tuple(act.shape)}") from err
            out[:, pos, idx] = target[:, pos, idx]
    return head_slice_hooks(_group(heads), edit)


def patch_heads(heads: Iterable[Head | str], source: Mapping[str, torch.Tensor], positions=None) -> list:
    """Write the heads' outputs from ``source`` (another run's cache) into this run."""
    pos = _pos(positions)

    def edit(out, act, site, name, idx):
        _check_heads(act, idx, site)
        if name not in source:
            raise KeyError(f"the source cache has no {name}; record it with names_filter including it")
        src = source[name]
        if src.shape != act.shape:
            raise ValueError(f"patch for {name} has shape {tuple(src.shape)} but the activation has shape "
                             f"{tuple(act.shape)}; record the source with the same batch and sequence layout")
        out[:, pos, idx] = src[:, pos, idx].to(act.dtype)
    return head_slice_hooks(_group(heads), edit)


def steer_heads(vectors: Mapping[Head | str, torch.Tensor], scale: float = 1.0, positions=None) -> list:
    """Add ``scale * vector`` (shape ``(d_head,)``) to each named head's output."""
    pos = _pos(positions)
    by_site = group_by_site((head, (Head.parse(head).head, torch.as_tensor(vec))) for head, vec in vectors.items())

    def edit(out, act, site, name, items):
        for h, vec in items:
            _check_heads(act, [h], site)
            if vec.shape != (act.shape[-1],):
                raise ValueError(f"steering vector for {Head(site.tower, site.layer, h)} has shape {tuple(vec.shape)}; "
                                 f"expected ({act.shape[-1]},) = (d_head,)")
            out[:, pos, h] = out[:, pos, h] + scale * vec.to(act.dtype)
    return head_slice_hooks(by_site, edit)


def active_heads(vla, tower: str | None = None) -> list[Head]:
    """Every head that can change the output (of the layers that run, and whose attention output is used)."""
    points = vla.hook_points()
    return [h for h in points.layout.heads(tower)
            if points.head_active(HookSite(h.tower, h.layer, "hook_z"))]

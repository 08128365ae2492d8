"""Activations recorded by ``run_with_cache``, keyed by hook name, with head-level views.

Usage::

    _, cache = vla.run_with_cache(input_ids=ids, pixel_values=pv, names_filter="llm.*hook_z")
    cache["llm.blocks.1.attn.hook_z"]          # (B, S, H, D)
    cache.head("llm.L1H3")                      # (B, S, D)
    z, labels = cache.stack_heads("llm", return_labels=True)   # (L * H, B, S, D), [Head, ...]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator

import torch

from .sites import Head, HeadLayout, HookSite, hook_name


class ActivationCache(Mapping):
    """A read-only mapping from hook name to tensor, plus the model's head layout."""

    def __init__(self, store: dict[str, torch.Tensor], layout: HeadLayout) -> None:
        self._store = dict(store)
        self.layout = layout

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, Head):
            return self.head(key)
        if key not in self._store:
            known = ", ".join(list(self._store)[:6]) + (" ..." if len(self._store) > 6 else "")
            raise KeyError(f"{key!r} was not recorded; recorded: {known or 'nothing'}")
        return self._store[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} hook points)"

    def head(self, head: Head | str, kind: str = "hook_z") -> torch.Tensor:
        """One head's slice of a per-head site: ``(B, S, D)``."""
        head = self.layout.validate(Head.parse(head))
        return self[hook_name(head.tower, head.layer, kind)][:, :, head.head]

    def stack_heads(self, tower: str = "llm", kind: str = "hook_z", return_labels: bool = False):
        """Every recorded layer's heads of ``tower`` stacked: ``(n_layers_recorded * H, B, S, D)``."""
        layers = sorted(HookSite.parse(n).layer for n in self._store
                        if n.startswith(f"{tower}.") and HookSite.parse(n).kind == kind)
        if not layers:
            raise KeyError(f"no {kind} of tower {tower!r} in this cache")
        parts = [self[hook_name(tower, l, kind)].movedim(2, 0) for l in layers]  # (H, B, S, D) each
        stacked = torch.cat(parts, dim=0)
        if not return_labels:
            return stacked
        n_heads = parts[0].shape[0]
        return stacked, [Head(tower, l, h) for l in layers for h in range(n_heads)]

    def to(self, device) -> "ActivationCache":
        return ActivationCache({k: v.to(device) for k, v in self._store.items()}, self.layout)

    def mean(self, dims: tuple[int, ...] = (0,)) -> "ActivationCache":
        """Mean over the batch (default) or also positions ``(0, 1)``, keeping dims for broadcasting."""
        return ActivationCache({k: v.float().mean(dim=dims, keepdim=True).to(v.dtype) for k, v in self._store.items()},
                               self.layout)

"""Where each LLM head looks from the action positions: over every camera view's patch grid and the prompt's text.

The rows are the ``hook_pattern`` of each head at the read positions (``record.py``), over the context
keys: BOS (key 0), the patches of view 0, view 1, ... (``1 + v * N + i`` for patch ``i`` of view ``v``,
row-major over the ``grid x grid`` patch grid), the proprio token when the model has one (key
``n_prefix - 1``), then the prompt's text tokens after BOS (keys ``n_prefix .. S0 - 1``). Keys after the
context (earlier action tokens, a regression head's slots and stop token) are not kept.

Usage::

    maps = explanation.attention
    maps.patches("llm.L1H2", view=0, at="dx")    # (grid, grid): fraction of the head's attention per patch
    maps.text("llm.L1H2")                       # DataFrame: token, key, attention (mean over read positions)
    maps.summary("llm.L1H2")                    # {"bos": .., "view 0": .., "proprio": .., "text": .., "actions": ..}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sites import Head


@dataclass(frozen=True, eq=False)
class AttentionMaps:
    """Attention of every LLM head from the read positions over the context (see the module docstring)."""

    pattern: np.ndarray  # (L, H, P, S0) float32, read-only: softmax rows of hook_pattern
    read_labels: tuple[str, ...]  # (P,): what each read position predicts ("dx", or "t0.dx" for a chunk slot)
    n_views: int  # camera views per observation
    grid: int  # patches per side of one view (image_size // patch_size)
    has_proprio: bool  # whether key n_prefix - 1 is a proprio token
    text_tokens: tuple[str, ...]  # the prompt's text tokens after BOS, in key order

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid

    @property
    def n_prefix(self) -> int:
        return 1 + self.n_views * self.n_patches + int(self.has_proprio)

    def _head(self, head: Head | str) -> Head:
        head = Head.parse(head, default_tower="llm")
        n_layers, n_heads = self.pattern.shape[:2]
        if head.tower != "llm" or head.layer >= n_layers or head.head >= n_heads:
            raise ValueError(f"no attention recorded for {head}: the LLM has {n_layers} layers x {n_heads} heads")
        return head

    def _rows(self, at: int | str | None) -> slice | list[int]:
        if at is None:
            return slice(None)
        if isinstance(at, str):
            if at not in self.read_labels:
                raise ValueError(f"no read position {at!r}; read positions are {list(self.read_labels)}")
            return [self.read_labels.index(at)]
        if not 0 <= at < len(self.read_labels):
            raise ValueError(f"read position {at} out of range 0..{len(self.read_labels) - 1}")
        return [at]

    def of(self, head: Head | str, at: int | str | None = None) -> np.ndarray:
        """``(S0,)``: the head's attention over the context, at one read position or averaged over all of them."""
        head = self._head(head)
        return self.pattern[head.layer, head.head][self._rows(at)].mean(0)

    def patches(self, head: Head | str, view: int = 0, at: int | str | None = None) -> np.ndarray:
        """``(grid, grid)``: the head's attention to each patch of camera ``view`` (row-major, as the image)."""
        if not 0 <= view < self.n_views:
            raise ValueError(f"view {view} out of range: this model takes {self.n_views} view(s)")
        start = 1 + view * self.n_patches
        return self.of(head, at)[start:start + self.n_patches].reshape(self.grid, self.grid)

    def text(self, head: Head | str, at: int | str | None = None):
        """pandas DataFrame of the prompt's text tokens: ``token``, ``key`` (sequence position), ``attention``."""
        import pandas as pd

        row = self.of(head, at)
        keys = np.arange(self.n_prefix, self.n_prefix + len(self.text_tokens))
        return pd.DataFrame({"token": list(self.text_tokens), "key": keys, "attention": row[keys].astype(np.float64)})

    def summary(self, head: Head | str, at: int | str | None = None) -> dict[str, float]:
        """Attention mass on BOS, each view's patches, the proprio token, the text, and the rest (``actions``:
        earlier action tokens, or a regression head's slots and stop token); the values sum to 1."""
        row = self.of(head, at).astype(np.float64)
        out = {"bos": float(row[0])}
        for view in range(self.n_views):
            start = 1 + view * self.n_patches
            out[f"view {view}"] = float(row[start:start + self.n_patches].sum())
        if self.has_proprio:
            out["proprio"] = float(row[self.n_prefix - 1])
        out["text"] = float(row[self.n_prefix:].sum())
        out["actions"] = max(0.0, 1.0 - sum(out.values()))  # keys after the context: earlier action tokens / slots
        return out

"""``heads`` and ``random-heads``: train only the slices of the selected attention heads.

``heads`` attaches per-head delta parameters (``train/head_deltas.py``) to the query and
output-projection slices of the heads in a ``HeadMask`` (key/value slices too with
``kv=True``); every other weight is frozen and stays bit-identical. ``random-heads`` is
the control: ``HeadMask.random_like(mask, seed)`` (as many heads per tower, at random).

Trainable scalars, per selected head of width ``hd`` in a tower of width ``D``:
``2 * hd * D`` (query rows + output columns) plus ``hd`` for a projection with a bias
(the vision towers' fused qkv); with ``kv=True``, per distinct KV head in a layer,
``2 * hd * D`` (+ ``hd`` for the value bias; the key bias has zero gradient and never trains).

Usage::

    strategy = HeadsStrategy(HeadMask.from_json("heads.json", layout=vla.head_layout))
    strategy.prepare(vla)   # strategy.deltas holds the HeadDeltas
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...masks import HeadMask
from ..head_deltas import HeadDeltas
from .base import freeze


class HeadsStrategy:
    """``heads``: per-head deltas on the selected heads' q (and optionally k/v) and output slices."""

    name = "heads"

    def __init__(self, mask: HeadMask, kv: bool = False) -> None:
        if not isinstance(mask, HeadMask):
            raise ValueError(f"the heads strategy needs a HeadMask, got {type(mask).__name__}")
        if not mask.heads:
            raise ValueError("the head mask selects no heads: nothing would train")
        self.mask = mask
        self.kv = bool(kv)
        self.deltas: HeadDeltas | None = None

    def prepare(self, vla: nn.Module) -> None:
        from ...interventions import active_heads

        active = active_heads(vla)
        self.mask = self._choose(active)
        allowed = set(active)
        idle = [str(h) for h in self.mask.heads if h not in allowed]
        if idle:
            raise ValueError(f"the head mask selects {len(idle)} head(s) that cannot change this model's output, "
                             f"e.g. {idle[:4]} (a layer that does not run, or whose heads' outputs feed nothing, such "
                             "as pi0's last VLM layer): training them would change nothing; choose among "
                             "robosteer.interventions.active_heads(vla)")
        freeze(vla)
        self.deltas = HeadDeltas.attach(vla, self.mask, kv=self.kv)
        for p in self.deltas.parameters():
            p.requires_grad_(True)

    def _choose(self, active: list) -> HeadMask:
        """The heads to train, given the heads that can change this model's output: the mask as given."""
        return self.mask

    def save(self, vla: nn.Module, directory: str | Path) -> Path:
        """A heads adapter (``train/adapters.py``): safetensors of the trained slices + JSON."""
        from ..adapters import save_heads_adapter

        if self.deltas is None:
            raise ValueError("the heads strategy has not been applied to a model (call prepare first)")
        return save_heads_adapter(self.deltas, directory, strategy=self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kv": self.kv, "heads": [str(h) for h in self.mask.heads]}


class RandomHeadsStrategy(HeadsStrategy):
    """``random-heads``: as many heads per tower as ``mask``, drawn at random with ``seed``."""

    name = "random-heads"

    def __init__(self, mask: HeadMask, seed: int = 0, kv: bool = False) -> None:
        super().__init__(HeadMask.random_like(mask, seed), kv=kv)
        self.source = mask
        self.seed = seed

    def _choose(self, active: list) -> HeadMask:
        """Draw again among the heads that can change the output (the same draw where every head can)."""
        return HeadMask.random_like(self.source, self.seed, among=active)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}

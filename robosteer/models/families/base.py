"""What a model family tells the rest of robosteer about one tower's attention."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TowerModules:
    """Where a tower's blocks and attention projections are, and its head geometry.

    ``out`` is the attention output projection: its input, reshaped to
    ``(batch, pos, n_heads, head_dim)``, is the per-head output site ``hook_z``.
    Either ``q``/``k``/``v`` (separate projections) or ``qkv`` (one fused projection,
    rows ordered q then k then v) is set.
    """

    name: str  # tower name at hook sites: "llm", "dino", "siglip"
    path: str  # module path of the block list, e.g. "language_model.model.layers"
    blocks: nn.ModuleList
    attn: str  # attribute of a block holding its attention module
    out: str  # attribute of the attention module: output projection
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None
    n_active_layers: int | None = None  # layers that run (OpenVLA's towers stop at the second-to-last block)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def attention(self, layer: int) -> nn.Module:
        return getattr(self.blocks[layer], self.attn)

    def projection(self, layer: int, which: str) -> nn.Module:
        """``which`` is "q", "k", "v", "qkv" or "out"."""
        name = getattr(self, which)
        if name is None:
            raise ValueError(f"tower {self.name!r} has no separate {which!r} projection")
        return getattr(self.attention(layer), name)

    def module_path(self, layer: int, which: str | None = None) -> str:
        """Dotted path from the model root, e.g. ``language_model.model.layers.3.self_attn.o_proj``."""
        base = f"{self.path}.{layer}"
        return base if which is None else f"{base}.{self.attn}.{getattr(self, which)}"

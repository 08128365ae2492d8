"""What a model family tells the rest of robosteer: its towers' attention (``TowerModules``),
the modules that never run, its output embedding, and the head layout derived from the towers (``Family``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from ...sites import HeadLayout


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
    # layers whose heads' outputs can change the output (pi0's VLM: all but the last, whose K/V feed the expert
    # but whose attention output feeds nothing); None: every active layer
    n_head_layers: int | None = None

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


def head_layout(towers: Mapping[str, TowerModules]) -> HeadLayout:
    """Layers x heads of every tower, in model order: the one place a ``HeadLayout`` is derived from a model."""
    return HeadLayout([(t.name, t.n_layers, t.n_heads) for t in towers.values()])


@dataclass(frozen=True)
class Family:
    """A model family: every family-specific fact the hook layer, head deltas and LoRA targeting use.

    ``tower_modules(model)`` maps tower names ("llm", "dino", ...) to their ``TowerModules``, in
    model order; ``unused_modules(model)`` lists module paths whose weights load but never change
    an output (LoRA does not target them); ``output_modules(model)`` lists the output-embedding
    modules (``lm_head``), which LoRA's "all-linear" leaves out as peft does for a ``PreTrainedModel``.
    The head layout follows from the towers (:func:`head_layout`).
    """

    name: str
    tower_modules: Callable[[nn.Module], dict[str, TowerModules]]
    unused_modules: Callable[[nn.Module], list[str]]
    output_modules: Callable[[nn.Module], list[nn.Module]]


class FamilyModelMixin:
    """What every model class gets from its ``family``: towers, unused modules, head layout, fingerprint.

    A model class sets ``family = get_family("<name>")`` and mixes this in (``OpenVLA``, ``Pi0Policy``).
    """

    family: Family

    @property
    def head_layout(self) -> HeadLayout:
        """Layers x heads of every tower (from ``tower_modules()``)."""
        return head_layout(self.tower_modules())

    def tower_modules(self) -> dict[str, TowerModules]:
        """Where each tower's attention lives (the family map, ``model.family.tower_modules``)."""
        return self.family.tower_modules(self)

    def unused_modules(self) -> list[str]:
        """Module paths whose weights load but never change an output (``model.family.unused_modules``)."""
        return self.family.unused_modules(self)

    def fingerprint(self) -> str:
        """A short hash of the architecture and weights, used to match adapters and masks to a base model.

        Hashes every tensor's name, shape and dtype plus a strided sample of its values, so it is
        fast on a 7B model and changes when any tensor is replaced.
        """
        h = hashlib.sha256()
        for name, t in self.state_dict().items():
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            if t.device.type != "meta" and t.numel():
                flat = t.detach().reshape(-1)
                step = max(1, flat.numel() // 257)
                h.update(flat[::step].to(torch.float32).cpu().numpy().tobytes())
        return h.hexdigest()[:16]

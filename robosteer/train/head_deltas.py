"""Per-head trainable deltas on attention projections, applied to the projections' outputs.

Finetuning a set of heads means training only their slices of the attention
projections. Each selected slice gets its own delta parameter; a forward hook on the
projection (an ``nn.Linear``) adds only the selected heads' contributions to what the
frozen base layer computed:

- rows of the weight (query, key, value): ``y[..., rows] += x @ Δᵀ`` with ``Δ`` of shape
  ``(hd, in)``, and ``y[..., rows] += Δb`` for the bias entries;
- columns of the weight (output projection): ``y += z[..., cols] @ Δᵀ`` with ``Δ`` of
  shape ``(out, hd)``, ``z`` the projection's input (``hook_z``).

So autograd forms gradients only for the small deltas (never a full-size weight gradient),
and no adapted copy of a weight is materialised. The base weights are never written while
the deltas are attached; they stay frozen and bit-identical. The hook is registered first
among the module's forward hooks (``prepend=True``), so the hook layer (``hooks.py``:
``hook_q``/``hook_k``/``hook_v`` on the projection outputs, ``hook_attn_out``) sees the
adapted values, and a ``hook_z`` patch (a pre-hook on the output projection's input) also
feeds the deltas. What the deltas do not change is ``module.weight``: code that reads weights
rather than running the modules (e.g. TransformerLens's ``W_O``) sees the base model unless
the deltas are merged first.

Which slices a head owns (``vla.tower_modules()``, the family's ``TowerModules``, gives the paths):

- query: rows ``h*hd:(h+1)*hd`` of ``q_proj`` (LLM) or of the fused ``qkv`` (vision), plus
  the same entries of the qkv bias when the projection has one;
- output: columns ``h*hd:(h+1)*hd`` of ``o_proj``/``proj`` (the output bias is shared by
  all heads, so it never trains);
- key/value (``kv=True``): rows ``g*hd:(g+1)*hd`` of ``k_proj``/``v_proj`` (fused: offset by
  D and 2D) for the KV head ``g = h // (n_heads // n_kv_heads)``. With grouped-query
  attention a KV head is shared by several query heads; it is trained once if any of
  them is selected. The key bias never trains: it shifts all of a query's scores by the
  same amount, which the softmax ignores, so its gradient is exactly zero (Adam would
  only amplify rounding noise into it).

Delta keys are canonical strings: ``"llm.L3H1.q"``, ``"llm.L3H1.o"``, ``"dino.L0H2.q_bias"``,
``"llm.L3KV0.k"``, ``"dino.L3KV0.v_bias"``. Inside the model the deltas are submodules
``<projection>.weight_head_delta`` / ``<projection>.bias_head_delta`` (so ``vla.parameters()``,
the optimizer, DDP/FSDP and training checkpoints find them).

Usage::

    deltas = HeadDeltas.attach(vla, mask, kv=False)   # base weights untouched, deltas start at zero
    ...train deltas.parameters()...
    deltas.merge()      # fold into the weights, hooks and delta submodules removed
    deltas.unmerge()    # bit-exact base weights back, deltas re-attached
    deltas.remove()     # back to the plain base model
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..masks import HeadMask

SUFFIX = "_head_delta"  # submodule name on a projection: "weight_head_delta" or "bias_head_delta"


class SliceDelta(nn.Module):
    """Per-head delta blocks for some rows (``dim=0``) or columns (``dim=1``) of one projection's weight or bias.

    It never forms the adapted tensor during training: :meth:`add_to_output` adds the blocks'
    contribution to the frozen layer's output. :meth:`folded` (used by ``merge``) is the adapted tensor.
    """

    def __init__(self, shape: tuple[int, ...], dim: int, slices: list[tuple[str, int, int]],
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        if len(shape) == 1 and dim != 0:
            raise ValueError("a bias delta covers entries along dim 0")
        self.dim = dim
        self.length = shape[dim]
        self.is_bias = len(shape) == 1
        self.spans = sorted((start, size, name) for name, start, size in slices)  # name: ParameterDict key, e.g. "H3_q"
        for (s0, n0, a), (s1, _, b) in zip(self.spans, self.spans[1:]):
            if s0 + n0 > s1:
                raise ValueError(f"head slices {a} and {b} overlap")
        self.deltas = nn.ParameterDict()
        for name, _, size in slices:
            block = list(shape)
            block[dim] = size
            self.deltas[name] = nn.Parameter(torch.zeros(block, dtype=dtype, device=device))
        # the covered rows/columns on the model's device (moves with .to(); not saved)
        self.register_buffer("positions", self.index.to(device), persistent=False)

    @property
    def index(self) -> torch.Tensor:
        """The rows/columns covered by the deltas, in ``spans`` order (on the CPU)."""
        return torch.cat([torch.arange(start, start + size) for start, size, _ in self.spans])

    def stacked(self) -> torch.Tensor:
        """The delta blocks concatenated along ``dim`` in ``spans`` order: ``(n*hd, in)``, ``(out, n*hd)`` or ``(n*hd,)``."""
        blocks = [self.deltas[name] for _, _, name in self.spans]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=self.dim)

    def add_to_output(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y`` (..., out) of the frozen layer on input ``x`` (..., in), plus this delta's contribution."""
        delta = self.stacked()
        if self.is_bias:  # (n*hd,) onto the covered output features
            return y.index_add(-1, self.positions, delta.to(y.dtype).expand(*y.shape[:-1], -1))
        if self.dim == 0:  # rows: the covered output features get x @ Δᵀ
            return y.index_add(-1, self.positions, F.linear(x, delta).to(y.dtype))
        return y + F.linear(x.index_select(-1, self.positions), delta).to(y.dtype)  # columns: z[..., cols] @ Δᵀ

    def folded(self, base: torch.Tensor) -> torch.Tensor:
        """The covered slices of ``base`` plus the deltas (what ``merge`` writes back), in ``spans`` order."""
        return base.index_select(self.dim, self.positions.to(base.device)) + self.stacked().to(base.dtype)


def _add_head_deltas(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of an adapted projection: the frozen output plus the selected heads' contributions."""
    x = args[0]
    for tensor in ("weight", "bias"):
        delta = getattr(module, tensor + SUFFIX, None)
        if delta is not None:
            output = delta.add_to_output(x, output)
    return output


@dataclass
class _Site:
    """One adapted tensor: ``module.<tensor>`` with its SliceDelta and the canonical key of each block."""

    module: nn.Module
    tensor: str  # "weight" or "bias"
    delta: SliceDelta
    keys: dict[str, str]  # canonical key -> ParameterDict key
    base_slice: torch.Tensor | None = None  # the base values of the slices while merged


class HeadDeltas:
    """The trainable per-head slices of one model. Build with :meth:`HeadDeltas.attach`."""

    def __init__(self, vla: nn.Module, mask: HeadMask, kv: bool, sites: list[_Site], base_fingerprint: str) -> None:
        self.vla = vla
        self.mask = mask
        self.kv = kv
        self.sites = sites
        self.base_fingerprint = base_fingerprint
        self.merged = False
        self._handles: list = []
        self._install()

    @classmethod
    def attach(cls, vla: nn.Module, mask: HeadMask, kv: bool = False) -> "HeadDeltas":
        """``HeadDeltas.attach(vla, mask, kv=False)``: register zero deltas for the mask's heads."""
        if mask.layout != vla.head_layout:
            raise ValueError(f"the head mask is for layout {mask.layout.to_dict()}, the model has "
                             f"{vla.head_layout.to_dict()}")
        if not mask.heads:
            raise ValueError("the head mask selects no heads: nothing to train")
        # SliceDelta: head deltas are attached already. Parametrized weights: merge/unmerge write into
        # ``module.weight``, which a parametrization recomputes on every access, so they would be lost.
        if any(parametrize.is_parametrized(m) or isinstance(m, SliceDelta) for m in vla.modules()):
            raise ValueError("this model already has parametrized weights or head deltas (an adapter is attached); "
                             "use a fresh model")
        fingerprint = vla.fingerprint()
        plan: dict[tuple[int, str, int], tuple[nn.Module, list[tuple[str, str, int, int]]]] = {}

        def add(module: nn.Module, tensor: str, dim: int, key: str, start: int, size: int) -> None:
            entry = plan.setdefault((id(module), tensor, dim), (module, []))
            entry[1].append((key, key.split(".", 1)[1].replace(".", "_"), start, size))

        towers = vla.tower_modules()
        seen: set[str] = set()
        for head in mask.heads:
            t = towers[head.tower]
            hd, d = t.head_dim, t.d_model
            group = head.head // (t.n_heads // t.n_kv_heads)
            kv_name = f"{head.tower}.L{head.layer}KV{group}"  # a KV head is not a Head: "llm.L3KV0"
            parts = [("q", str(head), head.head * hd, 0)]
            if kv:
                parts += [("k", kv_name, group * hd, d), ("v", kv_name, group * hd, 2 * d)]
            for which, name, start, fused_offset in parts:
                module = t.projection(head.layer, "qkv" if t.qkv else which)
                offset = fused_offset if t.qkv else 0
                if f"{name}.{which}" in seen:
                    continue  # a KV head shared by several selected query heads (GQA) trains once
                seen.add(f"{name}.{which}")
                add(module, "weight", 0, f"{name}.{which}", start + offset, hd)
                if module.bias is not None and which != "k":  # a key bias has zero gradient (see module doc)
                    add(module, "bias", 0, f"{name}.{which}_bias", start + offset, hd)
            add(t.projection(head.layer, "out"), "weight", 1, f"{head}.o", head.head * hd, hd)

        sites = []
        for (_, tensor, dim), (module, blocks) in plan.items():
            base = getattr(module, tensor)
            delta = SliceDelta(tuple(base.shape), dim, [(pk, s, n) for _, pk, s, n in blocks], base.dtype, base.device)
            sites.append(_Site(module, tensor, delta, {key: pk for key, pk, _, _ in blocks}))
        return cls(vla, mask, kv, sites, fingerprint)

    def _install(self) -> None:
        """Register the deltas as submodules of their projections and hook each projection once."""
        modules: dict[int, nn.Module] = {}
        for site in self.sites:
            site.module.register_module(site.tensor + SUFFIX, site.delta)
            modules[id(site.module)] = site.module
        # prepend: the deltas act before any other forward hook (hook_q, hook_attn_out) reads the output
        self._handles = [m.register_forward_hook(_add_head_deltas, prepend=True) for m in modules.values()]

    def _uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for site in self.sites:
            delattr(site.module, site.tensor + SUFFIX)

    # --- parameters ------------------------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(canonical key, delta parameter)`` pairs, in a fixed order."""
        for site in self.sites:
            for key, pkey in site.keys.items():
                yield key, site.delta.deltas[pkey]

    def parameters(self) -> list[nn.Parameter]:
        """The delta parameters (what the optimizer trains)."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """Trainable scalars: the sum of the deltas' sizes."""
        return sum(p.numel() for p in self.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{canonical key: delta}`` (detached copies)."""
        return {key: p.detach().clone() for key, p in self.named_parameters()}

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy deltas in by canonical key; the key sets and shapes must match exactly."""
        mine = dict(self.named_parameters())
        if set(tensors) != set(mine):
            missing, extra = sorted(set(mine) - set(tensors)), sorted(set(tensors) - set(mine))
            raise ValueError(f"adapter tensors do not match the selected heads: missing {missing[:6]}, "
                             f"unexpected {extra[:6]}")
        for key, p in mine.items():
            if tuple(tensors[key].shape) != tuple(p.shape):
                raise ValueError(f"adapter tensor {key} has shape {tuple(tensors[key].shape)}, expected {tuple(p.shape)}")
            p.copy_(tensors[key].to(p.dtype))

    # --- merge / unmerge / remove ---------------------------------------------------------------
    @torch.no_grad()
    def merge(self) -> None:
        """Fold the deltas into the weights and detach them (the base slices are kept for ``unmerge``)."""
        if self.merged:
            return
        for site in self.sites:
            base = getattr(site.module, site.tensor)
            index = site.delta.positions.to(base.device)
            site.base_slice = base.index_select(site.delta.dim, index)
            base.index_copy_(site.delta.dim, index, site.delta.folded(base))
        self._uninstall()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`: restore the base slices bit-exact and re-attach the same deltas."""
        if not self.merged:
            return
        for site in self.sites:
            weight = getattr(site.module, site.tensor)
            weight.index_copy_(site.delta.dim, site.delta.positions.to(weight.device), site.base_slice)
            site.base_slice = None
        self._install()
        self.merged = False

    def remove(self) -> None:
        """Detach the deltas: the model is the plain base model again (bit-exact)."""
        self.unmerge()
        self._uninstall()
        self.sites = []

"""Read and write robosteer's named hook sites inside an nnsight trace.

A robosteer model is a plain ``nn.Module`` whose forward takes keyword arguments, so
``nnsight.NNsight(vla)`` wraps it as it is and ``.trace(input_ids=..., pixel_values=...)``
runs the normal multimodal forward. This module maps the canonical hook names of
``robosteer.sites`` (``llm.blocks.3.attn.hook_z``, ``dino.blocks.0.attn.hook_z``, ...) to the
module whose ``.input``/``.output`` carries the value in nnsight, reshaped exactly as
``robosteer.hooks`` reshapes it, so the same site gives the same tensor in both libraries:

=====================  =============================================  ==========================
hook kind              nnsight value                                  shape
=====================  =============================================  ==========================
``attn.hook_z``        input of the out-projection (``o_proj`` / ``proj``)  (batch, pos, head, d_head)
``attn.hook_q/k/v``    output of ``q_proj``/``k_proj``/``v_proj``, or    (batch, pos, head, d_head)
                       the q/k/v third of the fused vision ``qkv``
``attn.hook_attn_out``  output of the out-projection                  (batch, pos, d_model)
``hook_resid_pre``     input of the block                             (batch, pos, d_model)
``hook_resid_post``    output of the block                            (batch, pos, d_model)
=====================  =============================================  ==========================

``hook_pattern`` has no nnsight counterpart: the models run SDPA, which never forms the
attention pattern (``vla.run_with_cache`` switches the layer to explicit attention for it).

nnsight serves values in the order the model computes them: inside one trace, read or
write sites in run order (vision towers first, then the LLM; layers ascending; within a
block ``resid_pre``, ``q``, ``k``, ``v``, ``z``, ``attn_out``, ``resid_post``).
:func:`run_order` sorts names that way; :func:`read_many` uses it.

Usage::

    from robosteer.interop.nnsight import wrap, read, write

    model = wrap(vla)                                    # nnsight.NNsight(vla)
    with model.trace(input_ids=ids, pixel_values=pv):
        z = read(model, "llm.blocks.1.attn.hook_z").save()   # (B, S, H, D), equal to run_with_cache
    with model.trace(input_ids=ids, pixel_values=pv):
        z = read(model, "llm.blocks.1.attn.hook_z").clone()
        z[:, :, 2] = 0                                   # zero head 2 == ablate_heads(["llm.L1H2"])
        write(model, "llm.blocks.1.attn.hook_z", z)
        logits = model.output.logits.save()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch

from ..sites import HookSite

# Within one block, the order in which the model computes each site (hook_pattern has no nnsight site).
_KIND_ORDER = ("hook_resid_pre", "hook_q", "hook_k", "hook_v", "hook_z", "hook_attn_out", "hook_resid_post")


def wrap(vla) -> Any:
    """``model = wrap(vla)`` -> ``nnsight.NNsight(vla)``; trace with ``model.trace(input_ids=..., pixel_values=...)``.

    nnsight installs its own controller on every submodule's ``forward``; the model keeps
    computing the same values outside a trace and robosteer's own hooks keep working.
    """
    try:
        from nnsight import NNsight
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("robosteer.interop.nnsight needs nnsight: pip install 'robosteer[interop]'") from err
    if not hasattr(vla, "tower_modules"):
        raise TypeError(f"wrap() expects a robosteer model (with tower_modules()), got {type(vla).__name__}")
    return NNsight(vla)


@dataclass(frozen=True)
class SiteLocation:
    """Where a hook site lives in nnsight: a module path, ``"input"`` or ``"output"``, and its geometry."""

    name: str  # canonical hook name, e.g. "llm.blocks.3.attn.hook_z"
    path: str  # module path from the model root, e.g. "language_model.model.layers.3.self_attn.o_proj"
    attr: str  # "input" or "output"
    heads: int | None  # heads on the last-but-one axis (None: a (B, S, d_model) site)
    head_dim: int | None
    fused: int | None = None  # index of q/k/v in a fused qkv output (chunks of d_model)
    d_model: int | None = None


def _model(nn_model):
    module = getattr(nn_model, "_module", None)
    if module is None or not hasattr(module, "tower_modules"):
        raise TypeError("expected an nnsight wrapper of a robosteer model (robosteer.interop.nnsight.wrap(vla)), "
                        f"got {type(nn_model).__name__}")
    return module


def locate(vla, name: str) -> SiteLocation:
    """``locate(vla, "llm.blocks.3.attn.hook_z")`` -> module path, input/output and head geometry of the site."""
    points = vla.hook_points()
    site = points.resolve(name)
    if not points.active(site):
        raise ValueError(f"{name} never runs: this tower's output is taken from an earlier block "
                         "(OpenVLA uses the second-to-last), so nnsight would wait for it forever")
    tower = points.towers[site.tower]
    layer, kind = site.layer, site.kind
    if kind == "hook_z":
        return SiteLocation(name, tower.module_path(layer, "out"), "input", tower.n_heads, tower.head_dim)
    if kind == "hook_attn_out":
        return SiteLocation(name, tower.module_path(layer, "out"), "output", None, None)
    if kind in ("hook_q", "hook_k", "hook_v"):
        which = kind[-1]
        if tower.qkv is not None:
            return SiteLocation(name, tower.module_path(layer, "qkv"), "output", tower.n_heads, tower.head_dim,
                                fused="qkv".index(which), d_model=tower.d_model)
        heads = tower.n_heads if which == "q" else tower.n_kv_heads
        return SiteLocation(name, tower.module_path(layer, which), "output", heads, tower.head_dim)
    if kind == "hook_resid_pre":
        return SiteLocation(name, tower.module_path(layer), "input", None, None)
    if kind == "hook_resid_post":
        return SiteLocation(name, tower.module_path(layer), "output", None, None)
    raise ValueError(f"{name}: {kind} has no nnsight counterpart (the model runs SDPA, which forms no pattern); "
                     f"use vla.run_with_cache for it. nnsight sites: {', '.join(_KIND_ORDER)}")


def envoy_for(nn_model, name: str) -> Any:
    """``envoy_for(model, "llm.blocks.3.attn.hook_z")`` -> the nnsight envoy of the module carrying the site.

    For ``hook_z`` that is the out-projection, whose ``.input`` is the flat ``(B, S, H * D)`` tensor;
    :func:`read` and :func:`write` do the reshaping.
    """
    return nn_model.get(locate(_model(nn_model), name).path)


def read(nn_model, name: str) -> torch.Tensor:
    """Inside a trace: ``z = read(model, "llm.blocks.3.attn.hook_z")`` -> the site's value, shaped as in robosteer.

    The result is a view of the live activation: ``.clone()`` it before editing, ``.save()`` it to
    keep it after the trace.
    """
    loc = locate(_model(nn_model), name)
    return _view(loc, _raw(nn_model, loc))


def write(nn_model, name: str, value: torch.Tensor) -> None:
    """Inside a trace: ``write(model, "llm.blocks.3.attn.hook_z", z)`` replaces the site's value downstream.

    ``value`` must have the site's shape (as :func:`read` returns it); it is cast to the activation's dtype.
    """
    loc = locate(_model(nn_model), name)
    envoy = nn_model.get(loc.path)
    raw = _raw(nn_model, loc)
    old = _view(loc, raw)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"write({name!r}) needs a tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(old.shape):
        raise ValueError(f"write({name!r}): value has shape {tuple(value.shape)}, but the site has shape {tuple(old.shape)}")
    value = value.to(old.dtype)
    if loc.fused is not None:
        parts = list(raw.split(loc.d_model, dim=-1))  # q, k, v: (B, S, d_model) each
        parts[loc.fused] = value.reshape(parts[loc.fused].shape)
        new = torch.cat(parts, dim=-1)
    else:
        first = raw[0] if isinstance(raw, tuple) else raw
        new = value.reshape(first.shape)
        if isinstance(raw, tuple):
            new = (new,) + tuple(raw[1:])
    setattr(envoy, loc.attr, new)


def run_order(vla, names: Iterable[str]) -> list[str]:
    """``run_order(vla, names)`` -> the names sorted into the order the forward computes them."""
    towers = list(vla.tower_modules())
    # vision towers run first (in their declared order), the LLM last
    tower_rank = {t: i for i, t in enumerate([t for t in towers if t != "llm"] + ["llm"])}

    def key(name: str):
        site = HookSite.parse(name)
        if site.tower not in tower_rank:
            raise ValueError(f"unknown tower in {name!r}; towers: {towers}")
        if site.kind not in _KIND_ORDER:
            locate(vla, name)  # raises the explanatory error
        return tower_rank[site.tower], site.layer, _KIND_ORDER.index(site.kind)

    return sorted(dict.fromkeys(names), key=key)


def read_many(nn_model, names: Any) -> dict[str, torch.Tensor]:
    """Inside a trace: ``acts = read_many(model, "llm.*.hook_z").save()`` -> ``{name: value}`` (cloned).

    ``names``: a hook name, a glob, a list or a predicate, as for ``vla.run_with_cache``;
    sites that never run (vision blocks after the feature layer) and ``hook_pattern`` are left out.
    """
    vla = _model(nn_model)
    points = vla.hook_points()
    wanted = [n for n in points.expand(names)
              if points.active(HookSite.parse(n)) and HookSite.parse(n).kind in _KIND_ORDER]
    return {name: read(nn_model, name).clone() for name in run_order(vla, wanted)}


def _raw(nn_model, loc: SiteLocation) -> Any:
    return getattr(nn_model.get(loc.path), loc.attr)


def _view(loc: SiteLocation, raw: Any) -> torch.Tensor:
    x = raw[0] if isinstance(raw, tuple) else raw
    if loc.fused is not None:
        x = x.split(loc.d_model, dim=-1)[loc.fused]
    if loc.heads is None:
        return x
    return x.view(*x.shape[:-1], loc.heads, loc.head_dim)  # (B, S, H, D)

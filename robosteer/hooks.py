"""Reading and writing activations at named sites, TransformerLens style, without rewriting the model.

Every attention head of every tower is a site. Hook names follow TransformerLens,
prefixed by the tower (see ``robosteer.sites``):

==================================  =====================================  ==========================
name                                what                                   shape
==================================  =====================================  ==========================
``{t}.blocks.{l}.attn.hook_q``      queries (LLM: before RoPE)             (batch, pos, head, d_head)
``{t}.blocks.{l}.attn.hook_k/v``    keys / values                          (batch, pos, kv_head, d_head)
``{t}.blocks.{l}.attn.hook_z``      per-head output, input of out-proj     (batch, pos, head, d_head)
``{t}.blocks.{l}.attn.hook_pattern``  softmax attention (explicit while hooked)  (batch, head, q_pos, k_pos)
``{t}.blocks.{l}.attn.hook_attn_out``  attention output (after out-proj)   (batch, pos, d_model)
``{t}.blocks.{l}.hook_resid_pre/post``  residual stream into / out of block  (batch, pos, d_model)
==================================  =====================================  ==========================

A hook function has one signature everywhere: ``fn(activation, site) -> activation | None``
(return a tensor of the same shape to replace the activation). Backward hooks get the
gradient of the activation with the same signature. Hooks exist only inside
``vla.hooks(...)``, which removes them in ``finally`` (also on exceptions).

The sites are PyTorch hooks on the model's own modules (the output projection's input
for ``hook_z``), so with LoRA, head deltas or any other adapter active they see exactly
what the adapted model computes. ``hook_pattern`` switches only the hooked layer to an
explicit softmax attention while hooked; everything else keeps SDPA.

Usage::

    logits, cache = vla.run_with_cache(input_ids=ids, pixel_values=pv, names_filter=lambda n: n.endswith("hook_z"))
    z = cache["llm.blocks.3.attn.hook_z"]          # (B, S, H, D)
    with vla.hooks(fwd_hooks=[("llm.blocks.3.attn.hook_z", fn)]):
        out = vla(input_ids=ids, pixel_values=pv)
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from .models.families.base import head_layout
from .sites import ATTN_HOOKS, BLOCK_HOOKS, HeadLayout, HookSite, hook_name

HookFn = Callable[[torch.Tensor, HookSite], "torch.Tensor | None"]
ALL_KINDS = ATTN_HOOKS + BLOCK_HOOKS
_PATTERN_IMPL = "robosteer_pattern"


def _check_replacement(new: torch.Tensor, old: torch.Tensor, site: HookSite) -> torch.Tensor:
    if not isinstance(new, torch.Tensor):
        raise TypeError(f"hook at {site} returned {type(new).__name__}; return a tensor or None")
    if new.shape != old.shape:
        raise ValueError(f"hook at {site} returned shape {tuple(new.shape)}, but the activation has shape {tuple(old.shape)}")
    return new.to(old.dtype)


def _apply(view: torch.Tensor, site: HookSite, fwd: HookFn | None, bwd: HookFn | None) -> torch.Tensor:
    """Run a forward hook on ``view`` and attach a backward hook to the tensor that is used downstream."""
    out = view
    if fwd is not None:
        new = fwd(view, site)
        if new is not None:
            out = _check_replacement(new, view, site)
    if bwd is not None and out.requires_grad:
        def on_grad(grad: torch.Tensor) -> torch.Tensor | None:
            new = bwd(grad, site)
            return None if new is None else _check_replacement(new, grad, site)

        out.register_hook(on_grad)
    return out


class HookPoints:
    """Resolves hook names on one model and attaches PyTorch hooks for them."""

    def __init__(self, model) -> None:
        self.towers = model.tower_modules()

    @property
    def layout(self) -> HeadLayout:
        """The model's head layout (the same as ``model.head_layout``: both come from ``tower_modules()``)."""
        return head_layout(self.towers)

    def names(self, kinds: Sequence[str] | None = None, towers: Sequence[str] | None = None) -> list[str]:
        kinds = tuple(kinds or ALL_KINDS)
        out = []
        for tower in self.towers.values():
            if towers is not None and tower.name not in towers:
                continue
            for layer in range(tower.n_layers):
                for kind in ("hook_resid_pre",) + ATTN_HOOKS + ("hook_resid_post",):
                    if kind in kinds:
                        out.append(hook_name(tower.name, layer, kind))
        return out

    def active(self, site: HookSite) -> bool:
        """Whether the site's layer runs at all (OpenVLA's vision towers stop at the second-to-last block)."""
        tower = self.towers[site.tower]
        return tower.n_active_layers is None or site.layer < tower.n_active_layers

    def head_active(self, site: HookSite) -> bool:
        """Whether the heads at this site can change the output: the layer runs and its attention output is used
        (pi0's last VLM layer runs for its K/V, but its heads' outputs feed nothing)."""
        tower = self.towers[site.tower]
        return self.active(site) and (tower.n_head_layers is None or site.layer < tower.n_head_layers)

    def resolve(self, name: str) -> HookSite:
        """Parse and validate a hook name, with an error that says what exists."""
        site = HookSite.parse(name)
        if site.tower not in self.towers:
            raise ValueError(f"unknown hook point {name!r}: no tower {site.tower!r}; {self._describe()}")
        tower = self.towers[site.tower]
        if site.layer >= tower.n_layers:
            raise ValueError(f"unknown hook point {name!r}: tower {site.tower!r} has layers 0..{tower.n_layers - 1}; "
                             f"{self._describe()}")
        return site

    def _describe(self) -> str:
        parts = [f"{t.name} ({t.n_layers} layers x {t.n_heads} heads)" for t in self.towers.values()]
        return "towers: " + ", ".join(parts)

    def expand(self, spec: Any) -> list[str]:
        """Names matching ``spec``: a hook name, a glob (``"llm.*.hook_z"``), a list of those, or a predicate."""
        if callable(spec):
            return [n for n in self.names() if spec(n)]
        if isinstance(spec, str):
            if any(ch in spec for ch in "*?["):
                matched = [n for n in self.names() if fnmatch.fnmatchcase(n, spec)]
                if not matched:
                    raise ValueError(f"no hook point matches {spec!r}; {self._describe()}")
                return matched
            self.resolve(spec)
            return [spec]
        names: list[str] = []
        for item in spec:
            names.extend(self.expand(item))
        return names

    # --- attaching ------------------------------------------------------------------------
    def attach(self, site: HookSite, fwd: HookFn | None = None, bwd: HookFn | None = None) -> list:
        """Attach ``fwd``/``bwd`` at ``site``; returns removable handles (and restorers)."""
        tower = self.towers[site.tower]
        layer, kind = site.layer, site.kind
        if kind == "hook_z":
            return [tower.projection(layer, "out").register_forward_pre_hook(self._heads_pre(tower, site, fwd, bwd))]
        if kind == "hook_attn_out":
            return [tower.projection(layer, "out").register_forward_hook(self._post(site, fwd, bwd))]
        if kind in ("hook_q", "hook_k", "hook_v"):
            which = kind[-1]
            if tower.qkv is not None:
                return [tower.projection(layer, "qkv").register_forward_hook(self._fused_qkv(tower, site, which, fwd, bwd))]
            n = tower.n_heads if which == "q" else tower.n_kv_heads
            return [tower.projection(layer, which).register_forward_hook(self._heads_post(n, tower.head_dim, site, fwd, bwd))]
        if kind == "hook_pattern":
            return [_PatternHandle(tower.attention(layer), lambda p: _apply(p, site, fwd, bwd))]
        block = tower.blocks[layer]
        if kind == "hook_resid_pre":
            return [block.register_forward_pre_hook(self._resid_pre(site, fwd, bwd), with_kwargs=True)]
        if kind == "hook_resid_post":
            return [block.register_forward_hook(self._post(site, fwd, bwd))]
        raise ValueError(f"unknown hook kind {kind!r}")

    @staticmethod
    def _heads_pre(tower, site, fwd, bwd):
        def pre(module, args):
            x = args[0]  # (B, T, H * D)
            view = x.view(*x.shape[:-1], tower.n_heads, tower.head_dim)
            out = _apply(view, site, fwd, bwd)
            if out is view and bwd is None:
                return None
            return (out.reshape(x.shape),) + tuple(args[1:])
        return pre

    @staticmethod
    def _heads_post(n_heads, head_dim, site, fwd, bwd):
        def post(module, args, output):
            view = output.view(*output.shape[:-1], n_heads, head_dim)
            out = _apply(view, site, fwd, bwd)
            return None if out is view and bwd is None else out.reshape(output.shape)
        return post

    @staticmethod
    def _fused_qkv(tower, site, which, fwd, bwd):
        index = "qkv".index(which)

        def post(module, args, output):
            parts = list(output.split(tower.d_model, dim=-1))  # q, k, v: (B, T, C) each
            view = parts[index].view(*parts[index].shape[:-1], tower.n_heads, tower.head_dim)
            out = _apply(view, site, fwd, bwd)
            if out is view and bwd is None:
                return None
            parts[index] = out.reshape(parts[index].shape)
            return torch.cat(parts, dim=-1)
        return post

    @staticmethod
    def _post(site, fwd, bwd):
        def post(module, args, output):
            first = output[0] if isinstance(output, tuple) else output
            out = _apply(first, site, fwd, bwd)
            if out is first and bwd is None:
                return None
            return (out,) + tuple(output[1:]) if isinstance(output, tuple) else out
        return post

    @staticmethod
    def _resid_pre(site, fwd, bwd):
        def pre(module, args, kwargs):
            if args:
                x = args[0]
                out = _apply(x, site, fwd, bwd)
                return None if out is x and bwd is None else ((out,) + tuple(args[1:]), kwargs)
            x = kwargs["hidden_states"]
            out = _apply(x, site, fwd, bwd)
            return None if out is x and bwd is None else (args, {**kwargs, "hidden_states": out})
        return pre


class _PatternHandle:
    """Turns on explicit attention with a pattern callback for one attention module; ``remove()`` restores it."""

    def __init__(self, attn, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.attn = attn
        self.fn = fn
        if hasattr(attn, "pattern_hook"):  # robosteer's own ViT attention
            self.previous = attn.pattern_hook
            attn.pattern_hook = fn if self.previous is None else _chain(self.previous, fn)
            self.restore = lambda: setattr(attn, "pattern_hook", self.previous)
            return
        _register_pattern_attention()  # transformers attention (the LLM)
        self.previous = getattr(attn, "robosteer_pattern_hook", None)
        original_config = attn.config
        if self.previous is None:
            local = copy.copy(original_config)
            local._attn_implementation = _PATTERN_IMPL
            attn.config = local
        attn.robosteer_pattern_hook = fn if self.previous is None else _chain(self.previous, fn)

        def restore() -> None:
            attn.robosteer_pattern_hook = self.previous
            if self.previous is None:
                attn.config = original_config
                del attn.robosteer_pattern_hook
        self.restore = restore

    def remove(self) -> None:
        self.restore()


def _chain(first, second):
    def both(pattern):
        pattern = first(pattern)
        return second(pattern)
    return both


def _register_pattern_attention() -> None:
    """Register (once) an explicit-softmax attention function with transformers' AttentionInterface."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if _PATTERN_IMPL in ALL_ATTENTION_FUNCTIONS:
        return
    AttentionInterface.register(_PATTERN_IMPL, pattern_attention)


def pattern_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention that hands the softmax pattern to ``module.robosteer_pattern_hook``.

    The model-level mask was built for SDPA: ``None`` means plain causal, a bool mask means
    "may attend", a float mask is additive.
    """
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Tq, Tk)
    tq, tk = scores.shape[-2:]
    if attention_mask is None:
        if tq > 1:
            causal = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).tril(diagonal=tk - tq)
            scores = scores.masked_fill(~causal, float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :tk], float("-inf"))
    else:
        scores = scores + attention_mask[..., :tk]
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    hook = getattr(module, "robosteer_pattern_hook", None)
    if hook is not None:
        pattern = hook(pattern)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


class HookedModelMixin:
    """The TransformerLens-style API, mixed into a model class that defines ``tower_modules()``."""

    def hook_points(self) -> HookPoints:
        return HookPoints(self)

    def hook_names(self, kinds: Sequence[str] | None = None, towers: Sequence[str] | None = None) -> list[str]:
        """Every hook name (optionally of some kinds / towers), tower by tower, layer by layer."""
        return self.hook_points().names(kinds, towers)

    def sites(self, tower: str | None = None, kind: str = "head") -> list:
        """``vla.sites("llm")`` -> every LLM ``Head``; ``kind="hook_z"`` (or any hook kind) -> hook names."""
        points = self.hook_points()
        towers = None if tower is None else [tower]
        if tower is not None and tower not in points.towers:
            raise ValueError(f"unknown tower {tower!r}; {points._describe()}")
        if kind == "head":
            return points.layout.heads(tower)
        if kind not in ALL_KINDS:
            raise ValueError(f"unknown site kind {kind!r}; use 'head' or one of {ALL_KINDS}")
        return points.names([kind], towers)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable = (), bwd_hooks: Iterable = ()) -> Iterator["HookedModelMixin"]:
        """``with vla.hooks(fwd_hooks=[(name, fn)], bwd_hooks=[(name, fn)]): ...`` -- removed on exit, always."""
        points = self.hook_points()
        handles: list = []
        try:
            for specs, direction in ((fwd_hooks, "fwd"), (bwd_hooks, "bwd")):
                for spec, fn in specs:
                    explicit = isinstance(spec, str) and not any(ch in spec for ch in "*?[")
                    for name in points.expand(spec):
                        site = points.resolve(name)
                        if not points.active(site):
                            if explicit:
                                warnings.warn(f"{name} never runs: this tower's output is taken from an earlier block "
                                              "(OpenVLA uses the second-to-last), so a hook there has no effect",
                                              stacklevel=3)
                            continue
                        kw = {"fwd": fn} if direction == "fwd" else {"bwd": fn}
                        handles.extend(points.attach(site, **kw))
            yield self
        finally:
            for handle in reversed(handles):
                handle.remove()

    def run_with_hooks(self, *args, fwd_hooks: Iterable = (), bwd_hooks: Iterable = (), **kwargs):
        """Run the model once with temporary hooks: ``vla.run_with_hooks(input_ids=..., pixel_values=..., fwd_hooks=[...])``."""
        with self.hooks(fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(self, *args, names_filter: Any = None, device: Any = None, detach: bool = True, **kwargs):
        """``out, cache = vla.run_with_cache(input_ids=..., pixel_values=..., names_filter=...)``.

        ``names_filter``: a name, a glob, a list, or a predicate; default every site except ``hook_pattern``
        (recording a pattern switches its layer to explicit attention, which moves logits by float rounding).
        ``detach=False`` keeps the stored tensors in the autograd graph (for gradients through them).
        """
        from .cache import ActivationCache

        points = self.hook_points()
        default = [n for n in points.names() if not n.endswith("hook_pattern")]
        names = default if names_filter is None else points.expand(names_filter)
        store: dict[str, torch.Tensor] = {}

        def save(act: torch.Tensor, site: HookSite) -> None:
            value = act.detach() if detach else act
            store[str(site)] = value.to(device) if device is not None else (value.clone() if detach else value)

        with self.hooks(fwd_hooks=[(n, save) for n in names if points.active(HookSite.parse(n))]):
            out = self(*args, **kwargs)
        return out, ActivationCache(store, points.layout)

    def run_with_cache_and_grads(self, metric: Callable[[Any], torch.Tensor], *args, names_filter: Any = None, **kwargs):
        """Forward, ``metric(output).sum().backward()``, and both caches: ``value, acts, grads = ...``.

        Gradients are taken with respect to the stored activations only; parameter gradients are not
        kept, and no graph outlives the call.
        """
        from .cache import ActivationCache

        points = self.hook_points()
        default = [n for n in points.names() if not n.endswith("hook_pattern")]
        names = default if names_filter is None else points.expand(names_filter)
        names = [n for n in names if points.active(HookSite.parse(n))]
        acts: dict[str, torch.Tensor] = {}
        grads: dict[str, torch.Tensor] = {}

        def save(act, site):
            acts[str(site)] = act.detach().clone()

        def save_grad(grad, site):
            grads[str(site)] = grad.detach().clone()

        requires = [p.requires_grad for p in self.parameters()]
        try:
            for p in self.parameters():
                p.requires_grad_(False)
            with torch.enable_grad(), self.hooks(fwd_hooks=[(n, _leaf) for n in names] + [(n, save) for n in names],
                                                 bwd_hooks=[(n, save_grad) for n in names]):
                out = self(*args, **kwargs)
                value = metric(out)
                value.sum().backward()
        finally:
            for p, r in zip(self.parameters(), requires):
                p.requires_grad_(r)
        return value.detach(), ActivationCache(acts, points.layout), ActivationCache(grads, points.layout)


def _leaf(act: torch.Tensor, site: HookSite) -> torch.Tensor | None:
    """With frozen weights, the first hooked activation does not require grad: make it a leaf that does.

    Activations that already require grad are left alone, so gradients keep flowing through every path.
    """
    return None if act.requires_grad else act.detach().requires_grad_(True)

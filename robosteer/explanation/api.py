"""``explain``: why a VLA chose its action, head by head, for one observation.

Cost (a *pass* is what ``predict_action`` costs; ``record.py``), counted in ``Explanation.passes``:

- the explanation itself: one hooked pass, plus one backward call through the readout only;
- ``heads=`` (ablate with ``how="zero"`` / ``"mean"``, or ``how="patch"`` from ``source=``): one more pass;
- ``base=``: one more hooked pass (the base model's own action, read the same way).

So ``explain(adapted, ..., heads=..., base=...)``, everything at once, is 3 passes + 1 backward; the
backward covers both models (``readout.read_out``).

A base model is read on its own prediction: for a token model on its own greedy decode, so the deltas
(adapted - base, per head and per rest item) add up to the change of each quantity between the two
models' own predictions; when both decode the same tokens (``ex.base.tokens``) they share one sequence.

Usage::

    ex = robosteer.explain(vla, image, "pick up the red cube")            # or vla.explain(image, ...)
    ex = robosteer.explain(vla, image, text, heads=ex.top(5, dim="dz"), how="zero")
    ex.intervention.effect                                                 # (K, A) action units
    ex = robosteer.explain(adapted, image, text, base=base_vla)            # ex.base.delta["expected"]
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..data.schema import ACTION_NAMES
from ..interventions import ablate_heads
from ..sites import Head, hook_name
from .attention import AttentionMaps
from .readout import ChunkReadout, TokenReadout, action_affine, decompose, read_out
from .record import ActionInputs, Trace, intervene, patch_hooks, record
from .result import BaseComparison, Decomposition, Explanation, Intervention

HOWS = ("zero", "mean", "patch")


def _observation(observation: Any, instruction: str | None, proprio: Any) -> tuple[Any, str | None, Any]:
    """A ``Frame`` (or a mapping with ``image``/``views``, ``instruction``, ``proprio``) or bare image(s)."""
    if hasattr(observation, "images") and hasattr(observation, "instruction"):  # a data.frames.Frame
        images = observation.images
        return (images[0] if len(images) == 1 else list(images), instruction or observation.instruction,
                observation.proprio if proprio is None else proprio)
    if isinstance(observation, Mapping):
        views = observation.get("views")
        image = list(views.values()) if views else observation.get("image")
        return (image, instruction or observation.get("instruction"),
                observation.get("proprio") if proprio is None else proprio)
    return observation, instruction, proprio


def _action_names(n: int) -> tuple[str, ...]:
    return ACTION_NAMES if n == len(ACTION_NAMES) else tuple(f"a{i}" for i in range(n))


def _heads(vla, heads: Iterable) -> tuple[Head, ...]:
    """A ``HeadMask``, or a list of ``Head`` / ``"llm.L3H1"`` / ``(Head, effect)`` pairs from ``Explanation.top``."""
    out = []
    for item in heads:
        if isinstance(item, tuple) and len(item) == 2 and not isinstance(item, Head):
            item = item[0]
        out.append(vla.head_layout.validate(Head.parse(item, default_tower="llm")))
    if not out:
        raise ValueError("heads= names no head")
    return tuple(dict.fromkeys(out))


def _readout(vla, trace: Trace, unnorm_key: str | None):
    scale, offset = action_affine(vla, unnorm_key)
    if trace.tokens is not None:
        return TokenReadout(vla, trace.tokens, scale, offset)
    return ChunkReadout(vla, scale, offset)


def _parts(vla, trace: Trace, readout, values) -> dict[str, Decomposition]:
    heads, rest = decompose(vla, trace, values)
    model = values.model_values.cpu().numpy()
    return {q: Decomposition(q, q == "logit", heads[:, i].cpu().numpy(), {k: v[i].cpu().numpy() for k, v in rest.items()},
                             model[i]) for i, q in enumerate(readout.quantities)}


def _check_base(vla, base) -> None:
    if base is vla:
        raise ValueError("base= is the explained model itself; pass the model the adapter was trained on")
    mine, theirs = vla.config, base.config
    if base.head_layout != vla.head_layout or (mine.action_dim, mine.action_chunk, mine.action_head) != \
            (theirs.action_dim, theirs.action_chunk, theirs.action_head):
        raise ValueError("base= must have the explained model's architecture (layout, action size, action head)")
    if base.training:
        raise ValueError("base= is in training mode; call base.eval() first (dropout would change its action)")


def _means(trace: Trace, heads: tuple[Head, ...], means: Mapping | None) -> Mapping:
    if means is not None:
        return means
    vision = [str(h) for h in heads if h.tower != "llm"]
    if vision:
        raise ValueError(f"mean ablation of vision heads {vision[:3]} needs means= (e.g. cache.mean((0, 1)) of "
                         "run_with_cache); the default means cover LLM heads only")
    return {hook_name("llm", layer, "hook_z"): trace.z_mean[layer][None, None] for layer in {h.layer for h in heads}}


def _intervention(vla, inputs: ActionInputs, trace: Trace, readout, action: np.ndarray, expected, heads, how: str,
                  means, source) -> Intervention:
    if how == "patch":
        if source.z.shape != tuple(trace.z.shape):
            raise ValueError(f"source= was recorded with shape {source.z.shape}, this model reads "
                             f"{tuple(trace.z.shape)}; patch between inputs of one model")
        hooks = patch_hooks(heads, torch.from_numpy(np.array(source.z, dtype=np.float32)), inputs.read_positions)
    else:
        hooks = ablate_heads(heads, how=how, means=_means(trace, heads, means) if how == "mean" else None)
    logits, _, _, new_action = intervene(vla, inputs, hooks)
    new_expected = None if logits is None else readout.from_logits(logits)[1].cpu().numpy()
    return Intervention(heads=heads, how=how, action=new_action, effect=new_action - action,
                        expected=new_expected, expected_effect=None if expected is None else new_expected - expected)


def explain(vla, observation: Any, instruction: str | None = None, *, proprio: Any = None,
            unnorm_key: str | None = None, heads: Iterable | None = None, how: str = "zero",
            means: Mapping[str, torch.Tensor] | None = None, source: Explanation | None = None,
            base=None) -> Explanation:
    """``explain(vla, image, "pick up the red cube")`` -> ``Explanation`` of the action ``predict_action`` gives.

    ``observation``: an image (a list of ``n_views`` images for a multi-view model), or a ``Frame`` / mapping
    with ``image`` (or ``views``), ``instruction`` and ``proprio``. ``heads`` (a ``HeadMask``, head names or
    ``ex.top(...)``) with ``how``: ``"zero"`` / ``"mean"`` ablation at every position (``means``: hook_z name ->
    tensor broadcastable to (B, 1, H, Dh); default each head's mean over this input's context), or ``"patch"``:
    the heads' outputs at the action positions from ``source`` (another input's Explanation). ``base``: the
    model an adapter was trained on, for base vs adapted actions and per-head delta contributions.
    """
    if how not in HOWS:
        raise ValueError(f"how must be one of {HOWS}, got {how!r}")
    if vla.training:
        raise ValueError("explain needs the model in eval mode (vla.eval()): dropout would change the action")
    chosen = None if heads is None else _heads(vla, heads)
    if source is not None and (chosen is None or how != "patch"):
        raise ValueError("source= is the patching source; pass heads= and how='patch' with it")
    if how == "patch" and chosen is not None and not isinstance(source, Explanation):
        raise ValueError("how='patch' needs source=, the Explanation of the input to patch from "
                         "(explain(vla, other_image, other_instruction))")
    if how == "patch" and chosen is not None and any(h.tower != "llm" for h in chosen):
        raise ValueError("how='patch' patches LLM heads at the action positions; drop the vision heads")
    if base is not None:
        _check_base(vla, base)
    image, instruction, proprio = _observation(observation, instruction, proprio)
    inputs = ActionInputs.build(vla, image, instruction, proprio, unnorm_key)
    trace, action = record(vla, inputs)
    passes = 1
    readout = _readout(vla, trace, unnorm_key)
    models = [(vla, trace, readout)]
    if base is not None:
        base_trace, base_action = record(base, inputs)  # the base's own action, read on its own decode
        passes += 1
        models.append((base, base_trace, _readout(base, base_trace, unnorm_key)))
    values = read_out(models)  # the one backward, for every model at once
    parts = _parts(vla, trace, readout, values[0])
    comparison = None
    if base is not None:
        base_parts = _parts(base, base_trace, models[1][2], values[1])
        base_tokens = None if base_trace.tokens is None else base_trace.tokens.cpu().numpy()
        comparison = BaseComparison(action=base_action, tokens=base_tokens, parts=base_parts,
                                    delta={q: parts[q].minus(base_parts[q]) for q in parts})
    intervention = None
    if chosen is not None:
        expected = parts["expected"].value if "expected" in parts else None
        intervention = _intervention(vla, inputs, trace, readout, action, expected, chosen, how, means, source)
        passes += 1
    return Explanation(heads=tuple(vla.head_layout.heads("llm")), n_layers=trace.z.shape[0], n_heads=trace.z.shape[2],
                       action_names=_action_names(action.shape[-1]), action=action,
                       tokens=None if trace.tokens is None else trace.tokens.cpu().numpy(), parts=parts,
                       attention=_attention(vla, inputs, trace), z=trace.z.cpu().numpy(),
                       read_positions=tuple(inputs.read_positions), intervention=intervention, base=comparison,
                       passes=passes, backward=1)


def _attention(vla, inputs: ActionInputs, trace: Trace) -> AttentionMaps:
    cfg = vla.config
    names = _action_names(cfg.action_dim)
    labels = names if inputs.tokens else tuple(f"t{i // cfg.action_dim}.{names[i % cfg.action_dim]}"
                                               for i in range(inputs.n_read))
    ids = inputs.input_ids[0, 1:].tolist()
    tokens = tuple(vla.tokenizer.convert_ids_to_tokens(ids)) if vla.tokenizer is not None else tuple(map(str, ids))
    pattern = trace.pattern.cpu().numpy()
    pattern.setflags(write=False)
    return AttentionMaps(pattern=pattern, read_labels=labels, n_views=cfg.n_views,
                         grid=cfg.image_size // cfg.towers[0].patch_size, has_proprio=cfg.proprio_dim > 0,
                         text_tokens=tokens)

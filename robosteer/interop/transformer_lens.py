"""Export the LLM tower of a robosteer model to a TransformerLens ``TransformerBridge``, offline.

TransformerLens 4's ``TransformerBridge`` wraps a Hugging Face model object in place of
re-implementing it; ``transformer_lens.model_bridge.sources.build_bridge_from_module``
builds one from a module that is already in memory and the config it carries, so nothing
is fetched from the hub (``TransformerBridge.boot_transformers(name, hf_model=...)`` would
still look the name up for the tokenizer and processor). The exported bridge:

- runs ``vla.language_model`` (a ``LlamaForCausalLM``) through TransformerLens's Llama
  adapter with the raw weights: no ``fold_ln``, ``center_writing_weights`` or other
  processing, so activations are the model's own. Do not call
  ``bridge.enable_compatibility_mode()`` on it unless with ``no_processing=True``: weight
  processing rewrites the residual stream and the per-head values;
- takes the multimodal ``inputs_embeds`` (BOS, projected patches, [proprio], text) that the
  VLA builds, passed as a float tensor (:func:`bridge_inputs`); the vision towers and the
  projector are not part of the export;
- is a deep copy by default (``copy=True``): the bridge replaces submodules of the model it
  wraps, which would change the VLA's ``state_dict`` keys (``..._original_component.weight``).

Hook names map one to one (:func:`tl_hook_name`): ``llm.blocks.3.attn.hook_z`` is TransformerLens's
``blocks.3.attn.hook_z``, and ``llm.blocks.3.attn.hook_attn_out`` is ``blocks.3.hook_attn_out``.

Adapters are copied with the model: LoRA layers (peft, injected in place) and head deltas
(forward hooks on the projections that add the selected slices) both run inside the bridge,
so its activations are the adapted model's. TransformerLens's weight views (``W_O``, ``W_Q``,
...) read the base weights under either adapter (4.3 also shows ``W_O`` transposed): merge the
adapter (``HeadDeltas.merge()`` / peft's ``merge_and_unload``) before weight-based analyses.

Usage::

    from robosteer.interop.transformer_lens import to_transformer_lens, bridge_inputs

    bridge = to_transformer_lens(vla)
    logits, cache = bridge.run_with_cache(**bridge_inputs(vla, input_ids=ids, pixel_values=pv))
    z = cache["blocks.3.attn.hook_z"]        # equal to vla.run_with_cache(...)["llm.blocks.3.attn.hook_z"]
"""

from __future__ import annotations

import copy as _copy
from typing import Any

import torch

from ..sites import ATTN_HOOKS, HookSite

EXPORTED_TOWER = "llm"
_MODEL_NAME = "robosteer-llm"  # recorded on bridge.cfg.model_name; never looked up


def to_transformer_lens(vla, *, copy: bool = True, tokenizer: Any = "auto") -> Any:
    """``bridge = to_transformer_lens(vla)`` -> a ``TransformerBridge`` over (a copy of) ``vla.language_model``.

    ``copy=False`` wraps ``vla.language_model`` itself (no second copy of the weights): the VLA
    keeps computing the same values, but its submodules are replaced by bridge components, so
    its ``state_dict`` keys change; only do this on a model you will not save.
    ``tokenizer``: ``"auto"`` uses a copy of ``vla.tokenizer`` (if any) for ``bridge.to_tokens``;
    ``None`` attaches none. The VLA prompt still needs the image, so feed :func:`bridge_inputs`.
    """
    try:
        from transformer_lens.model_bridge.sources import build_bridge_from_module
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("robosteer.interop.transformer_lens needs transformer-lens>=4: "
                          "pip install 'robosteer[interop]'") from err
    lm = getattr(vla, "language_model", None)
    if not isinstance(lm, torch.nn.Module) or not hasattr(lm, "config"):
        raise TypeError(f"to_transformer_lens() expects a robosteer model with a transformers language_model, "
                        f"got {type(vla).__name__}")
    architecture = type(lm).__name__
    if architecture != "LlamaForCausalLM":
        raise ValueError(f"only Llama LLM towers are exported (TransformerLens adapter 'LlamaForCausalLM'); "
                         f"this model's language_model is a {architecture}")
    if tokenizer == "auto":
        tokenizer = getattr(vla, "tokenizer", None)
    if tokenizer is not None:
        tokenizer = _offline_tokenizer(tokenizer)
    if copy:
        lm = _copy.deepcopy(lm)
    return build_bridge_from_module(lm, architecture, hf_config=lm.config, tokenizer=tokenizer, model_name=_MODEL_NAME)


def bridge_inputs(vla, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  proprio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``bridge(**bridge_inputs(vla, input_ids=ids, pixel_values=pv))`` -> the VLA's logits from the exported LLM.

    Returns ``{"input": inputs_embeds (B, S, d_model), "attention_mask": (B, S)}`` (no mask key
    when ``attention_mask`` is None), built by ``vla.embed`` exactly as ``vla.forward`` builds them.
    A float ``input`` is what makes the bridge call the LLM with ``inputs_embeds``.
    """
    embeds, mask = vla.embed(input_ids, pixel_values, attention_mask, proprio)  # (B, S, d_model)
    out = {"input": embeds}
    if mask is not None:
        out["attention_mask"] = mask
    return out


def tl_hook_name(name: str) -> str:
    """``tl_hook_name("llm.blocks.3.attn.hook_z") == "blocks.3.attn.hook_z"`` (the bridge's name for our site)."""
    site = HookSite.parse(name)
    if site.tower != EXPORTED_TOWER:
        raise ValueError(f"{name}: only the {EXPORTED_TOWER!r} tower is exported to TransformerLens; "
                         f"read vision-tower sites with vla.run_with_cache or robosteer.interop.nnsight")
    if site.kind == "hook_attn_out":
        return f"blocks.{site.layer}.hook_attn_out"  # TransformerLens keeps it on the block
    if site.kind in ATTN_HOOKS:
        return f"blocks.{site.layer}.attn.{site.kind}"
    return f"blocks.{site.layer}.{site.kind}"  # hook_resid_pre / hook_resid_post


def _offline_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` that TransformerLens keeps as it is instead of reloading it by name.

    TransformerLens wants a tokenizer that prepends BOS; unless ``init_kwargs`` say
    ``add_bos_token=True`` it re-loads one with ``AutoTokenizer.from_pretrained(name_or_path)``,
    which would reach for the hub. OpenVLA's (and robosteer's) tokenizer already prepends BOS,
    which is checked here before it is marked so.
    """
    tokenizer = _copy.deepcopy(tokenizer)  # TransformerLens also sets padding and special tokens on it
    ids = tokenizer.encode("a")
    if tokenizer.bos_token_id is None or len(ids) < 2 or ids[0] != tokenizer.bos_token_id:
        raise ValueError("this tokenizer does not prepend BOS, so TransformerLens would re-load it from the hub; "
                         "pass tokenizer=None (the bridge then takes input embeddings and token ids only)")
    tokenizer.init_kwargs.setdefault("name_or_path", getattr(tokenizer, "name_or_path", "") or "")
    tokenizer.init_kwargs["add_bos_token"] = True
    return tokenizer

"""The fields of an OpenVLA ``config.json``: which ones robosteer knows, and checks that name the field.

``VLAConfig.from_hf_dict`` reads a config through these helpers, so that a value of the
wrong type (``"n_action_bins": "abc"``) or a missing ``text_config`` is a ``FileFormatError``
naming the file and the field, and a field robosteer does not know (a misspelt
``num_hiden_layers``, an unknown ``vision_backbone_id``) is a warning, or an error with
``strict=True``.

Usage::

    n_bins = get_int(d, "n_action_bins", 256, source, low=1)
    report_unknown(unknown_fields(d, known_backbones), source, strict=False)
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

from ..files import FileFormatError

# What OpenVLA's configuration_prismatic.OpenVLAConfig writes (see tests/fixtures/README.md), and robosteer's
# additions: "robosteer" (its own switches) and the OFT reference fixture's "fixture_timm_overrides".
OPENVLA_FIELDS = frozenset({
    "arch_specifier", "architectures", "auto_map", "hf_llm_id", "image_resize_strategy", "image_sizes",
    "llm_backbone_id", "llm_max_length", "model_type", "n_action_bins", "norm_stats", "output_projector_states",
    "pad_to_multiple_of", "pad_token_id", "text_config", "timm_model_ids", "timm_override_act_layers",
    "timm_override_kwargs", "torch_dtype", "transformers_version", "use_fused_vision_backbone", "vision_backbone_id",
    "robosteer", "fixture_timm_overrides",
})
# Attributes every transformers 4.40.1 PretrainedConfig has, which any config.json (or its text_config) may carry.
PRETRAINED_CONFIG_FIELDS = frozenset({
    "_name_or_path", "_commit_hash", "add_cross_attention", "bad_words_ids", "begin_suppress_tokens", "bos_token_id",
    "chunk_size_feed_forward", "cross_attention_hidden_size", "decoder_start_token_id", "diversity_penalty",
    "do_sample", "dtype", "early_stopping", "encoder_no_repeat_ngram_size", "eos_token_id",
    "exponential_decay_length_penalty", "finetuning_task", "forced_bos_token_id", "forced_eos_token_id", "id2label",
    "is_decoder", "is_encoder_decoder", "label2id", "length_penalty", "max_length", "min_length",
    "no_repeat_ngram_size", "num_beam_groups", "num_beams", "num_return_sequences", "output_attentions",
    "output_hidden_states", "output_scores", "pad_token_id", "prefix", "problem_type", "pruned_heads",
    "remove_invalid_values", "repetition_penalty", "return_dict", "return_dict_in_generate", "sep_token_id",
    "suppress_tokens", "task_specific_params", "temperature", "tf_legacy_loss", "tie_encoder_decoder",
    "tie_word_embeddings", "tokenizer_class", "top_k", "top_p", "torch_dtype", "torchscript", "transformers_version",
    "typical_p", "use_bfloat16", "architectures", "model_type",
})
# LlamaConfig's own fields (transformers 4.40.1, plus head_dim and rope_parameters of later versions).
LLAMA_FIELDS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache",
    "rope_theta", "rope_scaling", "rope_parameters", "attention_bias", "attention_dropout", "mlp_bias", "head_dim",
    "pretraining_tp",
})
ROBOSTEER_FIELDS = frozenset({"action_vocab_end", "prompt_suffix_token_id", "proprio_dim", "n_views",
                              "proprio_projector", "action_chunk", "action_head", "action_head_blocks",
                              "normalization", "use_film"})
# text_config fields that must be positive integers (or null where marked), checked before a model is sized by them.
_LLAMA_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings")
_LLAMA_OPTIONAL_SIZES = ("num_key_value_heads", "head_dim")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def get_int(d: dict, key: str, default: Any, source: Any, *, low: int | None = None, field: str | None = None,
            optional: bool = False) -> Any:
    """``d[key]`` (or ``default``) as an integer >= ``low`` (``None`` too when ``optional``), or ``FileFormatError``."""
    value = d.get(key, default)
    if value is None and optional:
        return None
    if not _is_int(value) or (low is not None and value < low):
        bound = "" if low is None else f" >= {low}"
        raise FileFormatError(source, field or key, f"expected an integer{bound}, got {_short(value)}")
    return value


def get_str(d: dict, key: str, default: Any, source: Any, *, field: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise FileFormatError(source, field or key, f"expected a string, got {_short(value)}")
    return value


def get_list(d: dict, key: str, source: Any, *, length: int, kind: type | tuple, what: str) -> list | None:
    """``d[key]`` as a list of ``length`` items of ``kind``; ``None`` when absent or null."""
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != length or not all(isinstance(v, kind) for v in value):
        raise FileFormatError(source, key, f"expected a list of {length} {what} (one per vision tower), got {_short(value)}")
    return value


def get_dict(d: dict, key: str, source: Any, *, field: str | None = None) -> dict:
    """``d[key]`` as an object; ``{}`` when absent or null."""
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FileFormatError(source, field or key, f"expected an object, got {_short(value)}")
    return value


def check_text_config(d: dict, source: Any) -> dict:
    """The ``text_config`` of a config.json, checked: present, an object, and its sizes positive integers."""
    if d.get("text_config") is None:
        raise FileFormatError(source, "text_config", "missing; expected the Llama settings object every OpenVLA "
                              "config.json has (at least {\"model_type\": \"llama\", \"vocab_size\": 32064, "
                              "\"pad_token_id\": 32000}); without it the 7B Llama defaults would be assumed, which "
                              "fit no OpenVLA checkpoint")
    text = get_dict(d, "text_config", source)
    for key in _LLAMA_SIZES + _LLAMA_OPTIONAL_SIZES:
        if key in text:
            get_int(text, key, None, source, low=1, field=f"text_config.{key}", optional=key in _LLAMA_OPTIONAL_SIZES)
    for key in ("pad_token_id", "bos_token_id"):
        if key in text:
            get_int(text, key, None, source, low=0, field=f"text_config.{key}", optional=True)
    for key in ("rms_norm_eps", "rope_theta"):
        value = text.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise FileFormatError(source, f"text_config.{key}", f"expected a positive number, got {_short(value)}")
    for key in ("model_type", "hidden_act"):
        if key in text:
            get_str(text, key, None, source, field=f"text_config.{key}")
    for key in ("rope_scaling", "rope_parameters"):
        if key in text:
            get_dict(text, key, source, field=f"text_config.{key}")
    heads, kv = text.get("num_attention_heads", 32), text.get("num_key_value_heads")
    if kv is not None and heads % kv:
        raise FileFormatError(source, "text_config.num_key_value_heads",
                              f"expected a divisor of num_attention_heads={heads}, got {kv}")
    return text


def unknown_fields(d: dict, known_backbones: Any) -> list[str]:
    """The fields (``"text_config.num_hiden_layers"``) and values (``vision_backbone_id``) robosteer does not know."""
    out = [key for key in d if key not in OPENVLA_FIELDS | PRETRAINED_CONFIG_FIELDS]
    text = d.get("text_config")
    if isinstance(text, dict):
        out += [f"text_config.{key}" for key in text if key not in LLAMA_FIELDS | PRETRAINED_CONFIG_FIELDS]
    extras = d.get("robosteer")
    if isinstance(extras, dict):
        out += [f"robosteer.{key}" for key in extras if key not in ROBOSTEER_FIELDS]
    backbone = d.get("vision_backbone_id")
    if backbone is not None and (not isinstance(backbone, str) or backbone not in known_backbones):
        out.append(f"vision_backbone_id={backbone!r} (expected one of {sorted(known_backbones)}; the towers are "
                   "built from timm_model_ids)")
    return out


def _suggest(name: str) -> str:
    """``" (did you mean 'num_hidden_layers'?)"`` for a near miss of a known field, else ``""``."""
    prefix, _, key = name.rpartition(".")
    pool = {"text_config": LLAMA_FIELDS, "robosteer": ROBOSTEER_FIELDS}.get(prefix, OPENVLA_FIELDS)
    close = difflib.get_close_matches(key, sorted(pool), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close and "=" not in name else ""


def report_unknown(names: list[str], source: Any, strict: bool) -> None:
    """Warn about ``names`` (robosteer ignores them); with ``strict``, raise ``FileFormatError`` instead."""
    if not names:
        return
    listed = ", ".join(name + _suggest(name) for name in names)
    problem = (f"unknown field(s) or value(s), which robosteer ignores (misspelt?): {listed}; expected only "
               "the fields of an OpenVLA config.json (docs/model.md)")
    if strict:
        raise FileFormatError(source, names[0].split("=")[0], problem + " [strict=True]")
    warnings.warn(f"{source}: {problem}", UserWarning, stacklevel=3)

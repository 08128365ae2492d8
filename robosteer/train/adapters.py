"""Saving and loading what finetuning produced: heads adapters (robosteer's format) and LoRA adapters (peft's).

A heads adapter is a folder, written atomically:

- ``adapter.safetensors``: one tensor per trained slice, keyed canonically
  (``"llm.L3H1.q"``, ``"llm.L3H1.o"``, ``"dino.L0H2.q_bias"``, ``"llm.L3KV0.k"``; see
  ``train/head_deltas.py``) — only the trained slices, nothing of the base model;
- ``adapter.json``: ``{"format": "robosteer.heads_adapter", "version": 1, "strategy",
  "heads" (canonical strings), "kv", "projections", "layout", "base_fingerprint",
  "dtype", "robosteer_version"}``.

Loading onto a base model checks ``vla.fingerprint()`` against ``base_fingerprint``
first and refuses another base model, naming both fingerprints; a loaded adapter
gives a bit-exact forward, and ``merge=True`` folds it into the weights.

A LoRA adapter is peft's own format (``adapter_config.json`` + ``adapter_model.safetensors``
with ``base_model.model.``-prefixed keys, so ``peft.PeftModel.from_pretrained`` reads it
too) plus ``robosteer.json`` with the base fingerprint.

Usage::

    save_heads_adapter(strategy.deltas, "out/adapter")
    deltas = load_heads_adapter(fresh_vla, "out/adapter", merge=True)
    load_lora_adapter(fresh_vla, "out/lora")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..masks import FORMAT, FORMAT_VERSION as MASK_VERSION, HeadMask
from ..files import FileFormatError, atomic_directory, read_json, save_safetensors_atomic, write_json_atomic
from .head_deltas import HeadDeltas

log = logging.getLogger(__name__)

HEADS_FORMAT = "robosteer.heads_adapter"
LORA_FORMAT = "robosteer.lora_adapter"
FORMAT_VERSION = 1
HEADS_TENSORS = "adapter.safetensors"
HEADS_META = "adapter.json"
LORA_TENSORS = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
LORA_META = "robosteer.json"
PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained prefixes its keys


def _version() -> str:
    from .. import __version__

    return __version__


def check_fingerprint(vla: nn.Module, expected: str, source: str | Path) -> None:
    """Refuse a base model whose ``fingerprint()`` differs from the one an adapter was trained on."""
    found = vla.fingerprint()
    if found != expected:
        raise FileFormatError(source, "base_fingerprint", f"the adapter was trained on base model {expected}, but this "
                              f"model's fingerprint is {found}; load it onto the same base policy it was finetuned from")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an adapter's safetensors file; ``FileFormatError`` for a missing, truncated or foreign file."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"adapter tensors not found: {path}")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError for a bad header or a pickle
        raise FileFormatError(path, None, f"not a readable safetensors file ({type(err).__name__}: {err})") from None


def save_heads_adapter(deltas: HeadDeltas, directory: str | Path, strategy: str = "heads") -> Path:
    """``save_heads_adapter(strategy.deltas, "out/adapter")``: the trained slices + JSON, atomically."""
    tensors = deltas.state_dict()
    projections = ["q", "o"] + (["k", "v"] if deltas.kv else [])
    meta = {"format": HEADS_FORMAT, "version": FORMAT_VERSION, "strategy": strategy,
            "heads": [str(h) for h in deltas.mask.heads], "kv": deltas.kv, "projections": projections,
            "layout": deltas.mask.layout.to_dict(), "base_fingerprint": deltas.base_fingerprint,
            "dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch."),
            "robosteer_version": _version()}
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_safetensors_atomic(tensors, tmp / HEADS_TENSORS, metadata={"format": "pt", "robosteer": HEADS_FORMAT})
        write_json_atomic(tmp / HEADS_META, meta)
    log.info("saved heads adapter (%d heads, %d parameters) to %s", len(deltas.mask.heads),
             sum(t.numel() for t in tensors.values()), directory)
    return directory


def read_heads_adapter_meta(directory: str | Path) -> dict[str, Any]:
    """The ``adapter.json`` of a heads adapter, checked for format, version and the fields loading reads."""
    path = Path(directory) / HEADS_META
    meta = read_json(path, "heads adapter metadata")
    if not isinstance(meta, dict):
        raise FileFormatError(path, None, f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != HEADS_FORMAT or meta.get("version") != FORMAT_VERSION:
        raise FileFormatError(path, "format", f"expected a {HEADS_FORMAT} v{FORMAT_VERSION} adapter, got "
                              f"format={meta.get('format')!r}, version={meta.get('version')!r}")
    heads = meta.get("heads")
    for key, ok, expected in (
            ("base_fingerprint", isinstance(meta.get("base_fingerprint"), str), "a string (vla.fingerprint())"),
            ("heads", isinstance(heads, list) and bool(heads) and all(isinstance(h, str) for h in heads),
             "a non-empty list of head names like 'llm.L3H1'"),
            ("kv", isinstance(meta.get("kv"), bool), "true or false"),
            ("strategy", isinstance(meta.get("strategy", ""), str), "a string")):
        if not ok:
            raise FileFormatError(path, key, f"expected {expected}, got {meta.get(key)!r:.80}")
    return meta


def load_heads_adapter(vla: nn.Module, directory: str | Path, merge: bool = False) -> HeadDeltas:
    """``load_heads_adapter(vla, "out/adapter", merge=False)`` -> the attached ``HeadDeltas``.

    ``vla`` must be the base model the adapter was trained on (checked by fingerprint).
    """
    directory = Path(directory)
    meta = read_heads_adapter_meta(directory)
    check_fingerprint(vla, meta["base_fingerprint"], directory / HEADS_META)
    mask = HeadMask._from_fields({"format": FORMAT, "version": MASK_VERSION, "layout": meta.get("layout"),
                                  "heads": meta["heads"], "method": meta.get("strategy", "")},
                                 vla.head_layout, str(directory / HEADS_META))
    tensors = _read_tensors(directory / HEADS_TENSORS)
    deltas = HeadDeltas.attach(vla, mask, kv=meta["kv"])
    try:
        deltas.load_state_dict(tensors)
    except ValueError as err:
        deltas.remove()  # leave the model as it was
        raise FileFormatError(directory / HEADS_TENSORS, None, f"{err}; expected the tensors of the heads that "
                              f"{HEADS_META} lists") from None
    if merge:
        deltas.merge()
    return deltas


def save_lora_adapter(vla: nn.Module, directory: str | Path, settings: Any, base_fingerprint: str) -> Path:
    """``save_lora_adapter(vla, "out/lora", settings, fingerprint)``: peft's adapter files + ``robosteer.json``."""
    from peft import get_peft_model_state_dict

    if not hasattr(vla, "peft_config"):
        raise ValueError("this model carries no LoRA adapter to save")
    state = get_peft_model_state_dict(vla, save_embedding_layers=False)
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_safetensors_atomic({PEFT_PREFIX + k: v for k, v in state.items()}, tmp / LORA_TENSORS,
                                metadata={"format": "pt"})
        vla.peft_config["default"].save_pretrained(str(tmp))
        write_json_atomic(tmp / LORA_META, {"format": LORA_FORMAT, "version": FORMAT_VERSION,
                                            "base_fingerprint": base_fingerprint, "settings": settings.to_dict(),
                                            "robosteer_version": _version()})
    return directory


def load_lora_adapter(vla: nn.Module, directory: str | Path, merge: bool = False) -> nn.Module:
    """``load_lora_adapter(vla, "out/lora")``: inject the saved LoRA into ``vla`` (checked by fingerprint)."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.tuners_utils import BaseTunerLayer

    directory = Path(directory)
    meta = read_json(directory / LORA_META, "LoRA adapter metadata")
    if not isinstance(meta, dict) or meta.get("format") != LORA_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FileFormatError(directory / LORA_META, "format", f"expected a robosteer LoRA adapter ({LORA_FORMAT!r}), "
                              f"got format={found!r}")
    if not isinstance(meta.get("base_fingerprint"), str):
        raise FileFormatError(directory / LORA_META, "base_fingerprint", f"expected a string, got "
                              f"{meta.get('base_fingerprint')!r:.80}")
    check_fingerprint(vla, meta["base_fingerprint"], directory / LORA_META)
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in _read_tensors(directory / LORA_TENSORS).items()}
    config = LoraConfig.from_pretrained(str(directory))
    inject_adapter_in_model(config, vla)
    try:
        result = set_peft_model_state_dict(vla, state)
    except RuntimeError as err:  # torch's load_state_dict: a tensor of the wrong shape
        raise FileFormatError(directory / LORA_TENSORS, None, f"LoRA tensors do not fit adapter_config.json ({err})") from None
    if getattr(result, "unexpected_keys", None):
        raise FileFormatError(directory / LORA_TENSORS, None, f"LoRA tensors that fit no module: "
                              f"{result.unexpected_keys[:6]}")
    if merge:
        with torch.no_grad():
            for module in vla.modules():
                if isinstance(module, BaseTunerLayer):
                    module.merge()
    return vla


def load_adapter(vla: nn.Module, directory: str | Path, merge: bool = False):
    """``load_adapter(vla, dir, merge=True)``: a heads or LoRA adapter, recognised by its metadata file."""
    directory = Path(directory)
    if (directory / HEADS_META).is_file():
        return load_heads_adapter(vla, directory, merge=merge)
    if (directory / LORA_META).is_file():
        return load_lora_adapter(vla, directory, merge=merge)
    raise FileNotFoundError(f"{directory} holds no robosteer adapter ({HEADS_META} or {LORA_META}); "
                            "a fully finetuned model is a checkpoint folder: load it with load_vla")

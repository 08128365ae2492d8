"""Building and loading pi0 from a lerobot policy folder (no lerobot import, nothing downloaded).

A lerobot pi0 folder holds ``config.json`` (``"type": "pi0"``), ``model.safetensors`` (keys
``model.paligemma_with_expert...``), ``policy_preprocessor.json`` / ``policy_postprocessor.json``
with their normaliser statistics in safetensors, and the tokenizer folder the preprocessor names.
Loading builds the model on the meta device, checks every key and shape against the file headers
before reading data, then assigns tensor by tensor (as ``models.loading`` does for OpenVLA).
``lm_head`` is copied into ``embed_tokens`` when the file has no ``embed_tokens`` (lerobot's
``_fix_pytorch_state_dict_keys``); ``time_mlp_*`` keys of older checkpoints are renamed.

Usage::

    pi0 = load_pi0("checkpoints/pi0_base", dtype="bfloat16", device="cuda")
    meta = build_pi0(Pi0Config.default(), device="meta")   # the real layout, no memory
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...files import read_json
from ..checkpoint_io import check_keys, iter_tensors, read_checkpoint_header, weight_files
from .config import CONFIG_NAME, Pi0Config
from .model import Pi0Policy
from .processor import Pi0Normalizer, load_tokenizer

EMBED = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD = "model.paligemma_with_expert.paligemma.lm_head.weight"
# lerobot keeps these in float32 when the rest is bfloat16 (``to_bfloat16_for_selected_params``)
FLOAT32_PARTS = ("vision_tower", "multi_modal_projector", "input_layernorm", "post_attention_layernorm", "model.norm",
                 "language_model.norm")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def is_pi0_folder(path: str | Path) -> bool:
    """Whether ``path/config.json`` is a lerobot policy config (it has a ``"type"``) of type pi0."""
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return False
    raw = read_json(config, "model config")
    return isinstance(raw, dict) and raw.get("type") == "pi0"


def lerobot_policy_type(path: str | Path) -> str | None:
    """The ``"type"`` of a lerobot policy ``config.json`` (``"pi0"``, ``"act"``, ...), or None for another format."""
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return None
    raw = read_json(config, "model config")
    if isinstance(raw, dict) and isinstance(raw.get("type"), str) and "input_features" in raw:
        return raw["type"]
    return None


def _dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; use a torch dtype or one of {sorted(_DTYPES)}")


def _keeps_float32(name: str) -> bool:
    return any(part in name for part in FLOAT32_PARTS)


def build_pi0(config: Pi0Config | str | Path, device: Any = None, dtype: Any = None, seed: int | None = None) -> Pi0Policy:
    """A pi0 with fresh weights (``device="meta"`` allocates nothing); ``seed`` makes the init reproducible."""
    cfg = config if isinstance(config, Pi0Config) else Pi0Config.from_folder(config)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "meta":
        with torch.device("meta"):
            policy = Pi0Policy(cfg)
    else:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            policy = Pi0Policy(cfg).to(device)
    dtype = _dtype(dtype)
    if dtype is not None:
        cast_pi0(policy, dtype)
    return policy


def cast_pi0(policy: Pi0Policy, dtype: torch.dtype) -> Pi0Policy:
    """lerobot's precision rule: ``dtype`` everywhere except the vision path and the RMSNorms (float32)."""
    for name, param in policy.named_parameters():
        want = torch.float32 if dtype != torch.float32 and _keeps_float32(name) else dtype
        param.data = param.data.to(want)
    return policy


def fix_keys(header: dict[str, Any]) -> dict[str, str]:
    """File key -> model key (older ``time_mlp_*`` names renamed)."""
    out = {}
    for key in header:
        new = key
        for old, repl in (("model.time_mlp_in.", "model.action_time_mlp_in."), ("model.time_mlp_out.", "model.action_time_mlp_out.")):
            if key.startswith(old):
                new = repl + key[len(old):]
        out[key] = new
    return out


def load_pi0(path: str | Path, dtype: Any = None, device: Any = None, load_tokenizer_files: bool = True) -> Pi0Policy:
    """``load_pi0(folder)`` -> ``Pi0Policy`` with the folder's weights, normaliser statistics and tokenizer.

    ``dtype=None`` keeps the config's ``dtype`` (lerobot's ``float32`` / ``bfloat16`` rule). Errors name the
    file and the field: a folder of another policy type, missing processor statistics, a key or shape that
    does not match the model the config describes.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"pi0 folder not found: {directory} (robosteer loads local folders only)")
    cfg = Pi0Config.from_folder(directory)
    normalizer = Pi0Normalizer.from_folder(directory, cfg)
    dtype = _dtype(dtype) or _dtype(cfg.dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    files = weight_files(directory)
    header = read_checkpoint_header(files)
    names = fix_keys(header)
    policy = build_pi0(cfg, device="meta")
    expected = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    found = {names[k]: v[0] for k, v in header.items()}
    if EMBED not in found and LM_HEAD in found:
        found[EMBED] = found[LM_HEAD]
    check_keys(expected, found, where=str(directory))
    params = dict(policy.named_parameters())
    copy_embed = EMBED not in {names[k] for k in header}
    for file in files:
        for key, tensor in iter_tensors(file, device=str(device)):
            key = names[key]
            targets = [key] + ([EMBED] if copy_embed and key == LM_HEAD else [])
            for target in targets:
                want = torch.float32 if dtype != torch.float32 and _keeps_float32(target) else dtype
                value = tensor.to(want) if tensor.is_floating_point() else tensor
                _assign(policy, target, value.clone() if target != key else value, params[target].requires_grad)
    leftover = [n for n, t in policy.state_dict().items() if t.device.type == "meta"]
    if leftover:
        raise ValueError(f"{directory}: tensors were not loaded: {leftover[:5]}")
    policy.normalizer = normalizer
    if load_tokenizer_files:
        policy.tokenizer = load_tokenizer(directory)
    policy.source = str(path)
    return policy.eval()


def _assign(model: torch.nn.Module, key: str, tensor: torch.Tensor, requires_grad: bool) -> None:
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[name] = torch.nn.Parameter(tensor, requires_grad=requires_grad and tensor.is_floating_point())

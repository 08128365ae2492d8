"""Building, loading and saving OpenVLA-architecture models.

Loading is memory-lean: the model is built on the meta device (no memory), the
checkpoint's headers are checked against it (names and shapes, before any data is
read), then each tensor is read and assigned in place, so a 7B bf16 checkpoint
takes one copy of its weights in RAM and stays bf16 unless a ``dtype`` is asked for.

Usage::

    vla = load_vla("checkpoints/openvla-7b")                      # as stored (bf16)
    vla = load_vla("tests/fixtures/tiny", dtype=torch.float32)
    meta = build_vla_from_config("openvla-7b-config.json", device="meta")
    vla.save_pretrained("out/")                                     # same format, bit-exact

Saving is in ``saving.py`` (``save_vla``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import read_json
from .assets import default_checkpoint_dir
from .checkpoint_io import iter_tensors, read_checkpoint_header, weight_files
from .config import VLAConfig
from .vla import OpenVLA, build_llama_config

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "added_tokens.json")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _as_config(config_or_path: Any) -> VLAConfig:
    if isinstance(config_or_path, VLAConfig):
        return config_or_path
    if isinstance(config_or_path, dict):
        return VLAConfig.from_hf_dict(config_or_path)
    path = Path(config_or_path)
    if path.is_dir():
        path = path / "config.json"
    return VLAConfig.from_hf_dict(read_json(path, "model config"))


def _as_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; use a torch dtype or one of {sorted(_DTYPES)}")


def build_vla_from_config(config_or_path: Any, device: Any = None, dtype: Any = None, tokenizer: Any = None,
                          seed: int | None = None) -> OpenVLA:
    """``build_vla_from_config(cfg_or_path, device="meta")`` -> a model with freshly initialised weights.

    ``device="meta"`` allocates nothing (for inspecting a 7B layout). ``seed`` makes the random init reproducible.
    """
    cfg = _as_config(config_or_path)
    dtype = _as_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "meta":
        with torch.device("meta"):
            vla = OpenVLA(cfg, tokenizer=tokenizer)
        return vla.to(dtype) if dtype is not None else vla
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        vla = OpenVLA(cfg, tokenizer=tokenizer)
        init_vision_weights(vla)
    if dtype is not None:
        vla = vla.to(dtype)
    return vla.to(device)


def init_vision_weights(vla: OpenVLA) -> None:
    """timm-like init of the towers' tokens (nn.Linear/Conv keep PyTorch's defaults)."""
    for tower in vla.vision_backbone.towers():
        nn.init.trunc_normal_(tower.pos_embed, std=0.02)
        for name in ("cls_token", "reg_token"):
            if hasattr(tower, name):
                nn.init.normal_(getattr(tower, name), std=0.02)
        if hasattr(tower, "attn_pool"):
            nn.init.trunc_normal_(tower.attn_pool.latent, std=tower.cfg.width ** -0.5)


def load_vla(path: str | Path, dtype: Any = None, device: Any = None, allow_pickle: bool = False,
             load_tokenizer: bool = True) -> OpenVLA:
    """``load_vla("path/to/checkpoint")`` -> ``OpenVLA`` with the checkpoint's weights.

    ``path`` is a local HF-format OpenVLA folder (``config.json`` + safetensors, optional
    ``dataset_statistics.json`` and tokenizer files), or ``"default"`` for robosteer's own small
    Franka policy. ``dtype=None`` keeps the stored dtype. Nothing is downloaded.
    """
    if str(path) == "default":
        path = default_checkpoint_dir()
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {directory} (robosteer loads local folders only)")
    cfg = _as_config(directory)
    stats_path = directory / "dataset_statistics.json"
    if stats_path.is_file():
        stats = read_json(stats_path, "dataset statistics")
        if stats != cfg.norm_stats:
            cfg = cfg.replace(norm_stats=stats)
    dtype = _as_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")

    files = weight_files(directory, allow_pickle=allow_pickle)
    header = read_checkpoint_header(files)
    vla = build_vla_from_config(cfg, device="meta")
    expected = {k: tuple(v.shape) for k, v in vla.state_dict().items()}
    check_keys(expected, {k: v[0] for k, v in header.items()}, where=str(directory))

    params = dict(vla.named_parameters())
    for file in files:
        for key, tensor in iter_tensors(file, device=str(device) if device.type != "meta" else "cpu"):
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            _assign(vla, key, tensor, requires_grad=params[key].requires_grad)
    _rebuild_rotary(vla, device)
    leftover = [n for n, t in vla.state_dict().items() if t.device.type == "meta"]
    if leftover:
        raise ValueError(f"{directory}: tensors were not loaded: {leftover[:5]}")
    vla.config = vla.config.replace(torch_dtype=str(vla.dtype).removeprefix("torch."))
    if load_tokenizer:
        vla.tokenizer = load_tokenizer_from(directory)
    vla.eval()
    return vla


def check_keys(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: str) -> None:
    """Raise naming the first missing, unexpected and mis-shaped keys."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [(k, found[k], expected[k]) for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or shapes):
        return
    lines = [f"checkpoint {where} does not match the model its config.json describes:"]
    if missing:
        lines.append(f"  missing {len(missing)} key(s), first: {missing[:5]}")
    if unexpected:
        lines.append(f"  unexpected {len(unexpected)} key(s), first: {unexpected[:5]}")
    for key, got, want in shapes[:5]:
        lines.append(f"  shape mismatch for {key}: checkpoint has {list(got)}, model expects {list(want)}")
    if len(shapes) > 5:
        lines.append(f"  ... and {len(shapes) - 5} more shape mismatches")
    raise ValueError("\n".join(lines))


def _assign(model: nn.Module, key: str, tensor: torch.Tensor, requires_grad: bool) -> None:
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name)
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(tensor, requires_grad=requires_grad and tensor.is_floating_point())
    else:
        module._buffers[name] = tensor


def _rebuild_rotary(vla: OpenVLA, device: torch.device) -> None:
    """RoPE frequencies are a non-persistent buffer: recompute them after a meta-device build."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    with torch.device(device):
        vla.language_model.model.rotary_emb = LlamaRotaryEmbedding(config=build_llama_config(vla.config))


def load_tokenizer_from(directory: Path):
    """The checkpoint's tokenizer, or None (with a log line) when it has none we can read offline.

    Reads ``tokenizer.json`` through ``PreTrainedTokenizerFast`` directly: ``AutoTokenizer`` would look
    at ``config.json``'s ``auto_map`` and ask to run the checkpoint's remote code, which robosteer never does.
    """
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        return None
    try:
        if (directory / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
        from transformers import LlamaTokenizer  # sentencepiece-only folders (needs the sentencepiece package)

        return LlamaTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as err:
        log.warning("could not load the tokenizer in %s (%s); pass input_ids to predict_action", directory, err)
        return None


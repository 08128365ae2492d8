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
    oft = load_vla("openvla-oft-folder", overrides={"n_views": 2, "action_chunk": 8})  # OpenVLA-OFT

An OpenVLA-OFT folder also holds ``action_head--<step>_checkpoint.safetensors`` and
``proprio_projector--<step>_checkpoint.safetensors`` (OFT's DDP ``module.`` prefix is stripped);
their presence switches the config to the regression head / MLP proprio projector (sizes read from
the files). OFT keeps the chunk size and the number of images outside ``config.json``, so such a
folder needs ``overrides={"action_chunk": K}`` (and ``"n_views"`` when not 1); a folder that robosteer
wrote has them in ``config.json``. The ``.pt`` pickles are read only with ``allow_pickle=True``.

Saving is in ``saving.py`` (``save_vla``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.statistics import check_statistics
from ..files import read_json
from .assets import default_checkpoint_dir
from .action_heads import ACTION_HEAD_GLOB, PROPRIO_PROJECTOR_GLOB, strip_module_prefix
from .checkpoint_io import check_keys, iter_tensors, read_checkpoint_header, weight_files
from .saving import separate_modules
from .config import VLAConfig
from .vla import OpenVLA, build_llama_config

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "added_tokens.json")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _as_config(config_or_path: Any, strict: bool = False) -> VLAConfig:
    if isinstance(config_or_path, VLAConfig):
        return config_or_path
    if isinstance(config_or_path, dict):
        return VLAConfig.from_hf_dict(config_or_path, source="config dict", strict=strict)
    path = Path(config_or_path)
    if path.is_dir():
        path = path / "config.json"
    return VLAConfig.from_hf_dict(read_json(path, "model config"), source=path, strict=strict)


def _as_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; use a torch dtype or one of {sorted(_DTYPES)}")


def build_vla_from_config(config_or_path: Any, device: Any = None, dtype: Any = None, tokenizer: Any = None,
                          seed: int | None = None, strict: bool = False) -> OpenVLA:
    """``build_vla_from_config(cfg_or_path, device="meta")`` -> a model with freshly initialised weights.

    ``device="meta"`` allocates nothing (for inspecting a 7B layout). ``seed`` makes the random init reproducible.
    ``strict=True`` refuses config.json fields robosteer does not know (by default they are a warning).
    """
    cfg = _as_config(config_or_path, strict=strict)
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
             load_tokenizer: bool = True, overrides: dict[str, Any] | None = None, strict: bool = False) -> OpenVLA:
    """``load_vla("path/to/checkpoint")`` -> ``OpenVLA`` with the checkpoint's weights.

    ``path`` is a local HF-format OpenVLA folder (``config.json`` + safetensors, optional
    ``dataset_statistics.json`` and tokenizer files), or ``"default"`` for robosteer's own small
    Franka policy. ``dtype=None`` keeps the stored dtype. Nothing is downloaded. ``overrides`` changes
    config fields before the model is built (an OpenVLA-OFT folder's ``action_chunk`` and ``n_views``).
    Malformed files raise ``FileFormatError`` naming the file and the field; ``strict=True`` also refuses
    ``config.json`` fields robosteer does not know (misspelt ones), which by default are only a warning.
    """
    source = str(path)  # what the caller named it: "default" or the folder (discovery records it as the policy)
    if source == "default":
        path = default_checkpoint_dir()
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {directory} (robosteer loads local folders only)")
    from .pi0.loading import lerobot_policy_type, load_pi0

    policy_type = lerobot_policy_type(directory)
    if policy_type == "pi0":
        return load_pi0(directory, dtype=dtype, device=device, load_tokenizer_files=load_tokenizer)
    if policy_type is not None:
        raise ValueError(f"{directory / 'config.json'}: field 'type': a lerobot {policy_type!r} policy; robosteer loads "
                         "lerobot 'pi0' folders and OpenVLA-family Hugging Face folders")
    cfg = _as_config(directory, strict=strict)
    stats_path = directory / "dataset_statistics.json"
    if stats_path.is_file():
        stats = check_statistics(read_json(stats_path, "dataset statistics"), stats_path)
        if stats != cfg.norm_stats:
            cfg = cfg.replace(norm_stats=stats)
    extra_files = oft_head_files(directory, allow_pickle)
    cfg = _oft_config(cfg, extra_files, overrides or {}, directory)
    dtype = _as_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")

    files = weight_files(directory, allow_pickle=allow_pickle)
    header = read_checkpoint_header(files)
    vla = build_vla_from_config(cfg, device="meta")
    expected = {k: tuple(v.shape) for k, v in vla.state_dict().items()}
    separate = {k: v for k, v in expected.items() if k.split(".")[0] in separate_modules(cfg)}
    main = {k: v for k, v in expected.items() if k not in separate}
    check_keys(main, {k: v[0] for k, v in header.items()}, where=str(directory))
    sources = [(file, "") for file in files]
    absent = [m for m in separate_modules(cfg) if m not in extra_files]
    if absent:
        raise ValueError(f"{directory}: the config has an OpenVLA-OFT {absent[0]} but the folder has no "
                         f"{absent[0]}--<step>_checkpoint.safetensors")
    for module, file in extra_files.items():
        found = {f"{module}.{k}": v[0] for k, v in strip_module_prefix(read_checkpoint_header([file])).items()}
        check_keys({k: v for k, v in separate.items() if k.startswith(module + ".")}, found, where=str(file))
        sources.append((file, module + "."))

    params = dict(vla.named_parameters())
    for file, prefix in sources:
        for key, tensor in iter_tensors(file, device=str(device) if device.type != "meta" else "cpu"):
            key = prefix + key.removeprefix("module.") if prefix else key
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
    vla.source = source
    vla.eval()
    return vla


def oft_head_files(directory: Path, allow_pickle: bool = False) -> dict[str, Path]:
    """``{"action_head": file, "proprio_projector": file}`` for the OFT head files present in ``directory``."""
    out = {}
    for module, pattern in (("action_head", ACTION_HEAD_GLOB), ("proprio_projector", PROPRIO_PROJECTOR_GLOB)):
        found = sorted(directory.glob(pattern))
        if not found:
            pickles = sorted(directory.glob(pattern.replace(".safetensors", ".pt")))
            if pickles and not allow_pickle:
                raise ValueError(f"{directory} holds {module} weights only as a pickle ({pickles[0].name}); robosteer "
                                 "loads safetensors by default because pickle files can run code. If you trust it, pass "
                                 "allow_pickle=True (read with torch.load(weights_only=True)), or convert it.")
            found = pickles
        if len(found) > 1:
            raise ValueError(f"{directory} has several {module} checkpoints {[p.name for p in found]}; keep one")
        if found:
            out[module] = found[0]
    return out


def _oft_config(cfg: VLAConfig, files: dict[str, Path], overrides: dict[str, Any], directory: Path) -> VLAConfig:
    """The config with ``overrides`` applied and the OFT switches that the head files imply."""
    known = set(VLAConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown config override(s) {unknown}; VLAConfig fields: {sorted(known)}")
    changes = dict(overrides)
    if "action_head" in files and cfg.action_head == "tokens" and "action_head" not in overrides:
        keys = strip_module_prefix(read_checkpoint_header([files["action_head"]]))
        blocks = {k.split(".")[2] for k in keys if k.startswith("model.mlp_resnet_blocks.")}
        changes.update(action_head="l1-regression", action_head_blocks=len(blocks))
        changes.setdefault("normalization", "bounds_q99")  # OFT's LIBERO / Bridge platforms
        if "action_chunk" not in overrides:
            raise ValueError(f"{directory} is an OpenVLA-OFT checkpoint ({files['action_head'].name}); its chunk size is "
                             "not in config.json: pass overrides={'action_chunk': K} (OFT's NUM_ACTIONS_CHUNK, "
                             "e.g. 8 for LIBERO) and 'n_views' when it takes more than one image")
    if "proprio_projector" in files and not cfg.proprio_dim and "proprio_dim" not in overrides:
        shapes = strip_module_prefix(read_checkpoint_header([files["proprio_projector"]]))
        if "fc1.weight" not in shapes:
            raise ValueError(f"{files['proprio_projector']} has no fc1.weight (OFT's ProprioProjector)")
        changes.update(proprio_dim=int(shapes["fc1.weight"][0][1]), proprio_projector="mlp")
    return cfg.replace(**changes) if changes else cfg


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


"""Saving OpenVLA-architecture models in OpenVLA's HF format (config, safetensors, statistics, tokenizer).

An OpenVLA-OFT model also gets ``action_head--latest_checkpoint.safetensors`` (and
``proprio_projector--latest_checkpoint.safetensors``), keyed as OFT's ``finetune.py`` saves them.

Below both ``vla.py`` (``OpenVLA.save_pretrained``) and ``loading.py`` (which re-exports
``save_vla``), so the model class and the loader each depend on it, never on each other
in both directions.

Usage::

    save_vla(vla, "out/")            # the same as vla.save_pretrained("out/")
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..files import atomic_directory, save_safetensors_atomic, write_json_atomic
from .action_heads import SAVED_STEP
from .checkpoint_io import save_sharded
from .constants import BOS_ID, EOS_ID


def separate_modules(cfg) -> tuple[str, ...]:
    """Modules stored in their own OpenVLA-OFT files (``<module>--<step>_checkpoint.safetensors``), not in
    ``model.safetensors``: the regression action head and OFT's MLP proprio projector."""
    out = ("action_head",) if cfg.action_head == "l1-regression" else ()
    return out + (("proprio_projector",) if cfg.proprio_dim and cfg.proprio_projector == "mlp" else ())


def save_vla(vla: nn.Module, directory: str | Path, max_shard_size: int = 5 * 2**30) -> Path:
    """Write ``vla`` to ``directory`` in OpenVLA's HF format; the folder appears complete or not at all."""
    directory = Path(directory)
    state = vla.state_dict()
    meta = [k for k, t in state.items() if t.device.type == "meta"]
    if meta:
        raise ValueError(f"cannot save a model whose weights are on the meta device (e.g. {meta[0]})")
    cfg = vla.config.replace(torch_dtype=str(vla.dtype).removeprefix("torch."))
    separate = {}
    for module in separate_modules(cfg):  # OpenVLA-OFT's own files, keys with its DDP "module." prefix
        separate[module] = {"module." + k.removeprefix(module + "."): state.pop(k) for k in list(state)
                            if k.startswith(module + ".")}
    with atomic_directory(directory) as tmp:
        save_sharded(state, tmp, max_shard_size)
        for module, tensors in separate.items():
            save_safetensors_atomic(tensors, tmp / f"{module}--{SAVED_STEP}_checkpoint.safetensors",
                                    metadata={"format": "pt"})
        write_json_atomic(tmp / "config.json", cfg.to_hf_dict())
        write_json_atomic(tmp / "dataset_statistics.json", cfg.norm_stats)
        write_json_atomic(tmp / "generation_config.json", {"_from_model_config": True, "bos_token_id": BOS_ID,
                                                            "eos_token_id": EOS_ID, "pad_token_id": cfg.pad_token_id})
        vla.processor.save(tmp)
        if vla.tokenizer is not None:
            vla.tokenizer.save_pretrained(str(tmp))
    return directory

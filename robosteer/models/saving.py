"""Saving OpenVLA-architecture models in OpenVLA's HF format (config, safetensors, statistics, tokenizer).

Below both ``vla.py`` (``OpenVLA.save_pretrained``) and ``loading.py`` (which re-exports
``save_vla``), so the model class and the loader each depend on it, never on each other
in both directions.

Usage::

    save_vla(vla, "out/")            # the same as vla.save_pretrained("out/")
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..files import atomic_directory, write_json_atomic
from .checkpoint_io import save_sharded
from .constants import BOS_ID, EOS_ID


def save_vla(vla: nn.Module, directory: str | Path, max_shard_size: int = 5 * 2**30) -> Path:
    """Write ``vla`` to ``directory`` in OpenVLA's HF format; the folder appears complete or not at all."""
    directory = Path(directory)
    state = vla.state_dict()
    meta = [k for k, t in state.items() if t.device.type == "meta"]
    if meta:
        raise ValueError(f"cannot save a model whose weights are on the meta device (e.g. {meta[0]})")
    cfg = vla.config.replace(torch_dtype=str(vla.dtype).removeprefix("torch."))
    with atomic_directory(directory) as tmp:
        save_sharded(state, tmp, max_shard_size)
        write_json_atomic(tmp / "config.json", cfg.to_hf_dict())
        write_json_atomic(tmp / "dataset_statistics.json", cfg.norm_stats)
        write_json_atomic(tmp / "generation_config.json", {"_from_model_config": True, "bos_token_id": BOS_ID,
                                                            "eos_token_id": EOS_ID, "pad_token_id": cfg.pad_token_id})
        vla.processor.save(tmp)
        if vla.tokenizer is not None:
            vla.tokenizer.save_pretrained(str(tmp))
    return directory

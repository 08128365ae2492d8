"""Writing a pi0 folder in lerobot's format, so lerobot and ``robosteer.load_vla`` both read it.

``config.json`` (``"type": "pi0"``, the fields ``Pi0Config.from_folder`` reads), ``model.safetensors``,
``policy_preprocessor.json`` / ``policy_postprocessor.json`` with their statistics in safetensors, and
the tokenizer folder. Sizes that are not the real variants go to ``tiny_dims.json`` (the fixtures' format).
The folder is built beside the target and swapped in (``files.atomic_directory``).

Usage::

    save_pi0(pi0, "runs/full/final")
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...files import atomic_directory, save_safetensors_atomic, write_json_atomic
from .config import ACTION_KEY, DIMS_NAME, GEMMA_VARIANTS, STATE_KEY
from .processor import POSTPROCESSOR, PREPROCESSOR

PRE_STATS = "policy_preprocessor_step_6_normalizer_processor.safetensors"
POST_STATS = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"


def _config_dict(cfg) -> dict:
    visual = {k: {"type": "VISUAL", "shape": [3, cfg.vision.image_size, cfg.vision.image_size]} for k in cfg.image_keys}
    return {
        "type": "pi0", "n_obs_steps": 1,
        "input_features": {**visual, STATE_KEY: {"type": "STATE", "shape": [cfg.state_dim]}},
        "output_features": {ACTION_KEY: {"type": "ACTION", "shape": [cfg.action_dim]}},
        "paligemma_variant": cfg.variants[0], "action_expert_variant": cfg.variants[1], "dtype": cfg.dtype,
        "chunk_size": cfg.chunk_size, "n_action_steps": cfg.n_action_steps, "max_state_dim": cfg.max_state_dim,
        "max_action_dim": cfg.max_action_dim, "num_inference_steps": cfg.num_inference_steps,
        "time_sampling_beta_alpha": cfg.time_beta_alpha, "time_sampling_beta_beta": cfg.time_beta_beta,
        "time_sampling_scale": cfg.time_scale, "time_sampling_offset": cfg.time_offset,
        "min_period": cfg.min_period, "max_period": cfg.max_period, "use_relative_actions": False,
        "image_resolution": [cfg.vision.image_size, cfg.vision.image_size], "empty_cameras": 0,
        "normalization_mapping": dict(cfg.norm_map), "tokenizer_max_length": cfg.tokenizer_max_length,
    }


def _dims_dict(cfg) -> dict:
    def gemma(d):
        return {"width": d.width, "depth": d.depth, "mlp_dim": d.mlp_dim, "num_heads": d.n_heads,
                "num_kv_heads": d.n_kv_heads, "head_dim": d.head_dim}

    v = cfg.vision
    return {"note": "sizes behind the variant names (robosteer / test fixture format)",
            "gemma_variants": {cfg.variants[0]: gemma(cfg.vlm), cfg.variants[1]: gemma(cfg.expert)},
            "vision_config_overrides": {"hidden_size": v.width, "intermediate_size": v.mlp_dim,
                                        "num_hidden_layers": v.depth, "num_attention_heads": v.n_heads,
                                        "patch_size": v.patch, "projection_dim": cfg.vlm.width, "image_size": v.image_size},
            "vocab_size": cfg.vocab_size}


def _step(registry: str, norm, key: str, state_file: str, cfg) -> dict:
    kind = "STATE" if key == STATE_KEY else "ACTION"
    dim = cfg.state_dim if key == STATE_KEY else cfg.action_dim
    return {"registry_name": registry,
            "config": {"eps": norm.eps, "features": {key: {"type": kind, "shape": [dim]}},
                       "norm_map": {**cfg.norm_map, kind: norm.mode}},
            "state_file": state_file}


def save_pi0(pi0, directory: str | Path) -> Path:
    """Write ``pi0`` (weights, config, statistics, tokenizer) as a lerobot pi0 folder; returns the folder."""
    cfg = pi0.config
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        write_json_atomic(tmp / "config.json", _config_dict(cfg))
        if not all(v in GEMMA_VARIANTS for v in cfg.variants):
            write_json_atomic(tmp / DIMS_NAME, _dims_dict(cfg))
        state = {k: v.detach().contiguous().cpu() for k, v in pi0.state_dict().items()}
        save_safetensors_atomic(state, tmp / "model.safetensors", metadata={"format": "pt"})
        norm = pi0.normalizer
        save_safetensors_atomic({f"{STATE_KEY}.{k}": v.float().contiguous() for k, v in norm.state.stats.items()}
                                or {f"{STATE_KEY}.unused": torch.zeros(1)}, tmp / PRE_STATS)
        save_safetensors_atomic({f"{ACTION_KEY}.{k}": v.float().contiguous() for k, v in norm.action.stats.items()}
                                or {f"{ACTION_KEY}.unused": torch.zeros(1)}, tmp / POST_STATS)
        steps = [{"registry_name": "pi0_new_line_processor", "config": {}},
                 {"registry_name": "tokenizer_processor",
                  "config": {"max_length": cfg.tokenizer_max_length, "task_key": "task", "padding_side": "right",
                             "padding": "max_length", "truncation": True, "tokenizer_name": "tokenizer"},
                  "artifacts": {"tokenizer_name": "tokenizer"}},
                 _step("normalizer_processor", norm.state, STATE_KEY, PRE_STATS, cfg)]
        write_json_atomic(tmp / PREPROCESSOR, {"name": "policy_preprocessor", "steps": steps})
        write_json_atomic(tmp / POSTPROCESSOR, {"name": "policy_postprocessor",
                                                "steps": [_step("unnormalizer_processor", norm.action, ACTION_KEY,
                                                                POST_STATS, cfg)]})
        if pi0.tokenizer is not None:
            pi0.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    return directory

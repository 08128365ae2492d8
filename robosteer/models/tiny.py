"""Tiny OpenVLA-architecture configurations, for tests and the embedded default policy.

Same model class, module tree and code path as OpenVLA-7B; only the sizes change
(any image size, patch size, depth and width), and the tokenizer is robosteer's own
(with OpenVLA's last-256-ids action convention).

Usage::

    cfg, tok = tiny_config(image_size=32, patch_size=8, llm_layers=2, llm_heads=4)
    vla = build_vla_from_config(cfg, tokenizer=tok, seed=0)
    vla = tiny_vla(seed=0)  # the same in one call
"""

from __future__ import annotations

from typing import Any

from .config import ViTConfig, VLAConfig, padded_vocab_size, tower_from_timm
from .constants import N_ACTION_BINS


def default_norm_stats(action_dim: int = 7, proprio_dim: int = 7, key: str = "tiny_franka") -> dict[str, Any]:
    """Symmetric statistics (q01 = -1, q99 = 1, gripper dimension left un-normalised)."""
    def block(dim: int, with_mask: bool) -> dict[str, Any]:
        d = {"mean": [0.0] * dim, "std": [0.5] * dim, "min": [-1.0] * dim, "max": [1.0] * dim,
             "q01": [-1.0] * dim, "q99": [1.0] * dim}
        if with_mask:
            d["mask"] = [True] * (dim - 1) + [False]
        return d

    return {key: {"action": block(action_dim, True), "proprio": block(proprio_dim, False),
                  "num_transitions": 0, "num_trajectories": 0}}


def tiny_config(image_size: int = 28, patch_size: int = 14, fused: bool = True,
                dino: tuple[int, int, int] = (48, 3, 4), siglip: tuple[int, int, int] = (40, 3, 2),
                llm_dim: int = 32, llm_layers: int = 2, llm_heads: int = 4, llm_kv_heads: int | None = None,
                llm_mlp: int | None = None, proprio_dim: int = 0, norm_stats: dict | None = None,
                tokenizer: Any = None, projector: str = "fused-gelu-mlp"):
    """``tiny_config(...)`` -> ``(VLAConfig, tokenizer)``. Tower sizes are (width, depth, heads)."""
    from .tokenizer import build_tokenizer, tokenizer_info

    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    info = tokenizer_info(tokenizer)
    towers = [_tower("vit_large_patch14_reg4_dinov2.lvd142m", image_size, patch_size, dino)]
    if fused:
        towers.append(_tower("vit_so400m_patch14_siglip_224", image_size, patch_size, siglip))
    vocab = padded_vocab_size(info.action_vocab_end)
    text = {"hidden_size": llm_dim, "intermediate_size": llm_mlp or 4 * llm_dim, "model_type": "llama",
            "num_attention_heads": llm_heads, "num_hidden_layers": llm_layers,
            "num_key_value_heads": llm_kv_heads or llm_heads, "pad_token_id": info.pad_token_id, "vocab_size": vocab,
            "max_position_embeddings": 2048}
    cfg = VLAConfig(
        towers=tuple(towers), text=text, projector=projector, n_action_bins=N_ACTION_BINS,
        action_vocab_end=info.action_vocab_end, pad_token_id=info.pad_token_id,
        prompt_suffix_token_id=info.prompt_suffix_token_id, proprio_dim=proprio_dim,
        norm_stats=norm_stats if norm_stats is not None else default_norm_stats(), torch_dtype="float32",
        hf_extra={"llm_backbone_id": "robosteer-tiny-llama", "hf_llm_id": None},
    )
    return VLAConfig.from_hf_dict(cfg.to_hf_dict()), tokenizer  # canonical form: equal to what a reload gives


def _tower(timm_id: str, image_size: int, patch_size: int, dims: tuple[int, int, int]) -> ViTConfig:
    width, depth, heads = dims
    return tower_from_timm(timm_id, image_size, {"embed_dim": width, "depth": depth, "num_heads": heads,
                                                 "patch_size": patch_size, "img_size": image_size})


def tiny_vla(seed: int = 0, **kwargs: Any):
    """``tiny_vla(seed=0, llm_layers=2)`` -> a randomly initialised tiny ``OpenVLA`` with its tokenizer."""
    from .loading import build_vla_from_config

    cfg, tok = tiny_config(**kwargs)
    return build_vla_from_config(cfg, tokenizer=tok, seed=seed).eval()

"""robosteer's embedded default policy: its shape (the shipped checkpoint's folder: ``models/assets.py``).

``openvla-tiny-franka`` is the same model class as OpenVLA-7B (DINOv2 + SigLIP towers,
fused GELU projector, Llama LLM, 256 action bins at the top of the vocabulary) at a size
that trains from scratch on 2 CPU cores: 64 px images in 8 px patches (64 patches per
tower and view), a 6-layer x 8-head LLM (48 heads), and one proprio token after the patches.
The shipped policy (v5) also turns on OpenVLA-OFT's switches that ``robosteer pretrain``'s
recipe sets (``PretrainConfig.model_changes()``): two views (agentview, wrist), the L1
regression head, and FiLM.
"""

from __future__ import annotations

from typing import Any


# Sizes of the default policy (arguments of ``models.tiny.tiny_config``).
DEFAULT_SHAPE: dict[str, Any] = dict(
    image_size=64, patch_size=8,
    dino=(64, 4, 4), siglip=(64, 4, 4),  # (width, depth, heads): features from block 2 of 4
    llm_dim=128, llm_layers=6, llm_heads=8,  # 48 LLM heads, head_dim 16
    proprio_dim=7,
)


def default_config(norm_stats: dict, **overrides: Any):
    """``(VLAConfig, tokenizer)`` of the default policy with the given dataset statistics."""
    from .tiny import tiny_config

    return tiny_config(norm_stats=norm_stats, **{**DEFAULT_SHAPE, **overrides})

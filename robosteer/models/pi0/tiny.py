"""Tiny pi0 configurations (the real module tree and code path, small sizes), for tests and examples.

Usage::

    pi0 = tiny_pi0(seed=0)                                       # 2 cameras of 28 px, 4 heads, chunk 4
    pi0 = tiny_pi0(cameras=("base_0_rgb", "wrist_0_rgb", "empty_camera_0"), vlm_heads=4, kv_heads=2)
"""

from __future__ import annotations

from typing import Any

from .config import IMAGE_PREFIX, GemmaDims, Pi0Config, SiglipDims


def tiny_pi0_config(cameras: tuple[str, ...] = ("base_0_rgb", "wrist_0_rgb"), image_size: int = 28, patch: int = 14,
                    width: int = 32, expert_width: int = 16, depth: int = 2, heads: int = 4, kv_heads: int = 1,
                    head_dim: int = 8, vision: tuple[int, int, int] = (16, 2, 2), state_dim: int = 7,
                    action_dim: int = 7, chunk_size: int = 4, max_dim: int = 8, tokenizer_max_length: int = 16,
                    num_inference_steps: int = 4, vocab_size: int = 1024) -> Pi0Config:
    """A small ``Pi0Config``; ``vision`` is SigLIP's (width, depth, heads)."""
    v_width, v_depth, v_heads = vision
    return Pi0Config(
        vlm=GemmaDims(width, depth, 4 * width, heads, kv_heads, head_dim),
        expert=GemmaDims(expert_width, depth, 4 * expert_width, heads, kv_heads, head_dim),
        vision=SiglipDims(width=v_width, depth=v_depth, n_heads=v_heads, mlp_dim=4 * v_width, patch=patch,
                          image_size=image_size),
        vocab_size=vocab_size, image_keys=tuple(IMAGE_PREFIX + c for c in cameras), state_dim=state_dim,
        action_dim=action_dim, max_state_dim=max_dim, max_action_dim=max_dim, chunk_size=chunk_size,
        n_action_steps=chunk_size, num_inference_steps=num_inference_steps, tokenizer_max_length=tokenizer_max_length,
        variants=("robosteer-tiny-vlm", "robosteer-tiny-expert"),
    )


def tiny_pi0(seed: int = 0, tokenizer: Any = None, stats: bool = True, **sizes: Any):
    """A randomly initialised tiny ``Pi0Policy`` with robosteer's tokenizer and MEAN_STD statistics."""
    import torch

    from ..tokenizer import build_tokenizer
    from .loading import build_pi0
    from .processor import FeatureNorm, Pi0Normalizer

    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    sizes.setdefault("vocab_size", len(tokenizer))
    cfg = tiny_pi0_config(**sizes)
    pi0 = build_pi0(cfg, seed=seed)
    pi0.tokenizer = tokenizer
    if stats:
        gen = torch.Generator().manual_seed(seed + 1)

        def norm(dim: int) -> FeatureNorm:
            return FeatureNorm("MEAN_STD", {"mean": 0.1 * torch.randn(dim, generator=gen),
                                            "std": 0.5 + torch.rand(dim, generator=gen)})

        pi0.normalizer = Pi0Normalizer(norm(cfg.state_dim), norm(cfg.action_dim))
    return pi0.eval()

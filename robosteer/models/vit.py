"""The two OpenVLA vision towers (DINOv2 with registers, SigLIP), written natively.

Module and parameter names follow timm's ``VisionTransformer`` exactly, so a real
checkpoint's ``vision_backbone.featurizer.*`` / ``fused_featurizer.*`` keys load
as they are (fused ``attn.qkv``, ``ls1.scale_factor``, ``reg_token``, SigLIP's
``attn_pool.*``). No timm or torchvision is needed.

OpenVLA's feature is the output of the second-to-last block with the prefix
(class/register) tokens dropped and no final norm, so ``forward`` stops there; the
last block and ``norm`` are kept for loading but never change an output.

Usage::

    tower = VisionTransformer(ViTConfig(kind="dino", width=48, depth=3, heads=4, mlp_dim=192))
    feats = tower(pixels)  # (B, n_patches, width)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ViTConfig


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, N, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm ``Attention``: fused qkv, SDPA, output projection ``proj``.

    The per-head output site (``hook_z``) is the input of ``proj``, reshaped to heads.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.num_heads = cfg.heads
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=True)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=True)
        # Set by the hook layer while ``hook_pattern`` is requested: compute softmax(QK^T) explicitly
        # and hand the pattern to this callable (which may return a replacement).
        self.pattern_hook = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, Dh) each
        if self.pattern_hook is None:
            z = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, H, N, N)
            pattern = scores.softmax(dim=-1)
            replaced = self.pattern_hook(pattern)
            z = (pattern if replaced is None else replaced) @ v
        z = z.transpose(1, 2).reshape(B, N, C)
        return self.proj(z)


class LayerScale(nn.Module):
    """Per-channel scale. timm names it ``gamma``; HF-saved OpenVLA checkpoints call it ``scale_factor``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as OpenVLA's towers use
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A timm ViT block; with ``film_dim`` > 0, OpenVLA-OFT's FiLM between its attention and its MLP.

    FiLM (OFT's ``FiLMedVisionTransformerBlock``): ``x = (1 + gamma) * x + beta`` with ``gamma = scale(l)``
    and ``beta = shift(l)``, ``l`` the instruction's average LLM input embedding (B, film_dim); the same
    gamma and beta for every patch, so the modulation is spatially global.
    """

    def __init__(self, cfg: ViTConfig, film_dim: int = 0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.width) if cfg.layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim)
        self.ls2 = LayerScale(cfg.width) if cfg.layerscale else nn.Identity()
        if film_dim:
            self.scale = nn.Linear(film_dim, cfg.width)
            self.shift = nn.Linear(film_dim, cfg.width)

    def forward(self, x: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        if hasattr(self, "scale"):
            if language is None:
                raise ValueError("this vision tower is FiLM-conditioned: pass the instruction's average embedding")
            x = x * (1 + self.scale(language)[:, None]) + self.shift(language)[:, None]
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPoolLatent(nn.Module):
    """SigLIP's multi-head attention pooling ("MAP") head, as timm defines it.

    OpenVLA never uses its output, but real checkpoints carry its weights.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.num_heads = cfg.heads
        self.head_dim = cfg.head_dim
        self.latent = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.q = nn.Linear(cfg.width, cfg.width)
        self.kv = nn.Linear(cfg.width, 2 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, D)
        B, N, C = x.shape
        q = self.q(self.latent.expand(B, -1, -1)).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C)
        x = self.proj(x)
        x = x + self.mlp(self.norm(x))
        return x[:, 0]


class VisionTransformer(nn.Module):
    """A timm-compatible ViT whose ``forward`` returns OpenVLA's patch features."""

    def __init__(self, cfg: ViTConfig, film_dim: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        if cfg.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        if cfg.reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, cfg.width))
        n_pos = cfg.n_patches if cfg.no_embed_class else cfg.n_patches + cfg.n_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg, film_dim) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        if cfg.attn_pool:
            self.attn_pool = AttentionPoolLatent(cfg)

    def _prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        tokens = []
        if self.cfg.class_token:
            tokens.append(self.cls_token.expand(batch, -1, -1))
        if self.cfg.reg_tokens:
            tokens.append(self.reg_token.expand(batch, -1, -1))
        return tokens

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch embedding, position embedding and prefix tokens (timm ``_pos_embed``)."""
        x = self.patch_embed(pixels)  # (B, N, D)
        prefix = self._prefix_tokens(x.shape[0])
        if self.cfg.no_embed_class:
            x = x + self.pos_embed
            return torch.cat(prefix + [x], dim=1) if prefix else x
        x = torch.cat(prefix + [x], dim=1) if prefix else x
        return x + self.pos_embed

    def forward(self, pixels: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, n_patches, width)``: the second-to-last block's patch tokens.

        ``language`` (B, film_dim): the instruction embedding a FiLM-conditioned tower needs (else None).
        """
        x = self.embed(pixels)
        for block in self.blocks[: self.cfg.feature_layer + 1]:
            x = block(x) if language is None else block(x, language)
        return x[:, self.cfg.n_prefix_tokens :]

"""PaliGemma's SigLIP vision tower, with transformers' module names (``vision_model.encoder.layers.i...``).

Patch embedding (conv, stride = patch) + learned position embedding, pre-norm encoder layers
(LayerNorm eps 1e-6, biased q/k/v/out projections, gelu-tanh MLP) and ``post_layernorm``; pi0 takes
the last layer's output after ``post_layernorm`` (no pooling head). ``hook_z`` is ``out_proj``'s input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SiglipDims

LN_EPS = 1e-6


class SiglipEmbeddings(nn.Module):
    def __init__(self, dims: SiglipDims) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, dims.width, kernel_size=dims.patch, stride=dims.patch)
        self.position_embedding = nn.Embedding(dims.n_patches, dims.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # [B, 3, S, S] -> [B, N, D]
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        return x + self.position_embedding.weight[None]


class SiglipAttention(nn.Module):
    def __init__(self, dims: SiglipDims) -> None:
        super().__init__()
        self.n_heads, self.head_dim = dims.n_heads, dims.head_dim
        self.q_proj = nn.Linear(dims.width, dims.width)
        self.k_proj = nn.Linear(dims.width, dims.width)
        self.v_proj = nn.Linear(dims.width, dims.width)
        self.out_proj = nn.Linear(dims.width, dims.width)
        self.pattern_hook = None  # set by the hook layer while hook_pattern is requested

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = (proj(x).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        if self.pattern_hook is None:
            z = F.scaled_dot_product_attention(q, k, v)
        else:
            pattern = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * self.head_dim ** -0.5, dim=-1,
                                    dtype=torch.float32).to(q.dtype)
            replaced = self.pattern_hook(pattern)
            z = torch.matmul(pattern if replaced is None else replaced, v)
        return self.out_proj(z.transpose(1, 2).reshape(B, N, C))


class SiglipMLP(nn.Module):
    def __init__(self, dims: SiglipDims) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dims.width, dims.mlp_dim)
        self.fc2 = nn.Linear(dims.mlp_dim, dims.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipLayer(nn.Module):
    def __init__(self, dims: SiglipDims) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dims.width, eps=LN_EPS)
        self.self_attn = SiglipAttention(dims)
        self.layer_norm2 = nn.LayerNorm(dims.width, eps=LN_EPS)
        self.mlp = SiglipMLP(dims)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states + self.self_attn(self.layer_norm1(hidden_states))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, dims: SiglipDims) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipLayer(dims) for _ in range(dims.depth))


class SiglipVisionModel(nn.Module):
    """``pixels [B, 3, S, S]`` in [-1, 1] -> patch features ``[B, N, D]`` after ``post_layernorm``."""

    def __init__(self, dims: SiglipDims) -> None:
        super().__init__()
        self.embeddings = SiglipEmbeddings(dims)
        self.encoder = SiglipEncoder(dims)
        self.post_layernorm = nn.LayerNorm(dims.width, eps=LN_EPS)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)

"""Gemma decoder stacks as pi0 uses them: the PaliGemma VLM and the action expert.

Written out (not transformers' ``GemmaModel``) because pi0 drives them with its own masks, positions
and key/value cache: the VLM runs once over the prefix and returns every layer's K (after RoPE) and V;
the expert runs over the suffix and attends to ``[prefix K/V ; its own K/V]`` with its own weights.
Numerics follow transformers' Gemma (eager attention, float32 softmax), lerobot's ``PiGemmaRMSNorm``
(``x * rsqrt(mean(x^2) + eps) * (1 + w)``, variance in float32) and the openpi additive mask value.
Module and parameter names are the checkpoint's (``self_attn.q_proj``, ``mlp.gate_proj``, ...), so
a lerobot ``model.safetensors`` loads by name and the hook layer finds ``o_proj`` for ``hook_z``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import GemmaDims

MASK_VALUE = -2.3819763e38  # openpi's OPENPI_ATTENTION_MASK_VALUE (not -inf)
ROPE_THETA = 10_000.0
RMS_EPS = 1e-6


def additive_mask(allowed: torch.Tensor) -> torch.Tensor:
    """``[B, Tq, Tk]`` bool (may attend) -> ``[B, 1, Tq, Tk]`` float32: 0 where allowed, ``MASK_VALUE`` elsewhere."""
    return torch.where(allowed[:, None], 0.0, MASK_VALUE).to(torch.float32)


def rope(positions: torch.Tensor, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half RoPE tables ``cos, sin`` of shape ``[B, T, head_dim]`` for integer ``positions [B, T]``."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
                                     / head_dim))
    freqs = positions[..., None].float() * inv_freq  # [B, T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


class RMSNorm(nn.Module):
    """Gemma RMSNorm: the stored weight is an offset, the scale is ``1 + w``."""

    def __init__(self, dim: int, eps: float = RMS_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.float().square().mean(-1, keepdim=True)
        return (x * torch.rsqrt(var + self.eps) * (1.0 + self.weight.float())).type_as(x)


class GemmaAttention(nn.Module):
    """Multi-query attention (``n_kv_heads`` shared by all query heads); ``hook_z`` is ``o_proj``'s input."""

    def __init__(self, dims: GemmaDims) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = dims.n_heads, dims.n_kv_heads, dims.head_dim
        self.scaling = dims.head_dim ** -0.5
        self.q_proj = nn.Linear(dims.width, dims.n_heads * dims.head_dim, bias=False)
        self.k_proj = nn.Linear(dims.width, dims.n_kv_heads * dims.head_dim, bias=False)
        self.v_proj = nn.Linear(dims.width, dims.n_kv_heads * dims.head_dim, bias=False)
        self.o_proj = nn.Linear(dims.n_heads * dims.head_dim, dims.width, bias=False)
        self.pattern_hook = None  # set by the hook layer while hook_pattern is requested

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``x [B, T, W]`` -> (output ``[B, T, W]``, this call's ``(K, V)`` ``[B, kv, T, D]``, K after RoPE)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        own = (k, v)
        if past is not None:
            k, v = torch.cat([past[0].to(k.dtype), k], dim=2), torch.cat([past[1].to(v.dtype), v], dim=2)
        groups = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling + mask[..., : k.shape[2]]
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        if self.pattern_hook is not None:
            replaced = self.pattern_hook(pattern)
            pattern = pattern if replaced is None else replaced
        z = torch.matmul(pattern, v).transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(z), own


class GemmaMLP(nn.Module):
    """GeGLU: ``down(gelu_tanh(gate(x)) * up(x))``."""

    def __init__(self, dims: GemmaDims) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dims.width, dims.mlp_dim, bias=False)
        self.up_proj = nn.Linear(dims.width, dims.mlp_dim, bias=False)
        self.down_proj = nn.Linear(dims.mlp_dim, dims.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaLayer(nn.Module):
    """Pre-norm decoder layer; returns ``(hidden, (K, V))`` (hook sites read the first element)."""

    def __init__(self, dims: GemmaDims) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dims.width)
        self.self_attn = GemmaAttention(dims)
        self.post_attention_layernorm = RMSNorm(dims.width)
        self.mlp = GemmaMLP(dims)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None = None):
        attn, kv = self.self_attn(self.input_layernorm(hidden_states), cos, sin, mask, past)
        x = hidden_states + attn
        mlp_in = self.post_attention_layernorm(x)
        return x + self.mlp(mlp_in.to(self.mlp.up_proj.weight.dtype)), kv


class GemmaStack(nn.Module):
    """``layers`` + final ``norm`` (+ ``embed_tokens`` for the VLM, scaled by ``sqrt(width)``)."""

    def __init__(self, dims: GemmaDims, vocab_size: int | None = None) -> None:
        super().__init__()
        self.dims = dims
        if vocab_size is not None:
            self.embed_tokens = nn.Embedding(vocab_size, dims.width)
        self.layers = nn.ModuleList(GemmaLayer(dims) for _ in range(dims.depth))
        self.norm = RMSNorm(dims.width)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """transformers' ``GemmaTextScaledWordEmbedding``: ``embed_tokens[ids] * sqrt(width)`` (a float32 scale)."""
        weight = self.embed_tokens.weight
        scale = torch.tensor(self.dims.width ** 0.5, dtype=torch.float32, device=weight.device)
        return self.embed_tokens(ids) * scale.to(weight.dtype)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                past: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        """-> (final-normed hidden ``[B, T, W]``, per-layer ``(K, V)`` of these tokens)."""
        x = x.to(self.layers[0].self_attn.q_proj.weight.dtype)
        cos, sin = rope(positions, self.dims.head_dim, x.dtype)
        kvs = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos, sin, mask, None if past is None else past[i])
            kvs.append(kv)
        return self.norm(x), kvs

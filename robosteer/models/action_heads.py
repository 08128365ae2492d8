"""OpenVLA-OFT's extensions to an OpenVLA model: the L1 regression action head, the MLP proprio
projector, the empty action slots with bidirectional attention, and OFT's normalisation.

The modules have OpenVLA-OFT's names (moojink/openvla-oft, ``prismatic/models/action_heads.py`` and
``prismatic/models/projectors.py``), so the state dicts that its ``finetune.py`` saves load as they
are once the DDP ``module.`` prefix is stripped:

- ``L1RegressionActionHead.model`` is an ``MLPResNet``: ``layer_norm1``, ``fc1``, ReLU, ``n_blocks``
  pre-LayerNorm residual blocks (``ffn.0`` LayerNorm, ``ffn.1`` Linear, ReLU, plus the input), then
  ``layer_norm2`` and ``fc2``. It reads the (K*A, D) hidden states of a chunk, regrouped to (K, A*D)
  (each timestep's A hidden vectors concatenated), and returns the normalised chunk (K, A).
- ``ProprioProjector``: ``fc1`` GELU ``fc2``, one token after the patches.

Parallel decoding (OFT): the prompt is followed by K*A action slots whose input embeddings are
zero vectors and by the stop token (id 2); every position attends to every other one (OFT's fork of
``modeling_llama`` calls SDPA with ``is_causal=False`` and no mask), here written as a 4-D additive
mask that is zero wherever the key is not padding (:func:`bidirectional_mask`).

Usage::

    head = L1RegressionActionHead(llm_dim=4096, action_dim=7, chunk=8)
    chunk = head.predict_action(hidden)                 # (B, K*A, D) -> (B, K, A)
    mask = bidirectional_mask(attention_mask, batch, length, torch.float32, device)  # -> (B, 1, S, S)
    loss = l1_action_loss(vla, SequenceBuilder(vla).build(frames))   # OFT's training loss
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

STOP_ID = 2  # OFT's STOP_INDEX (Llama-2's EOS), the last position of a parallel-decoding sequence
SLOT_ID = 1  # the id OFT's predict_action puts in the action slots (its embedding is zeroed)

# File names of the separate head checkpoints in an OpenVLA-OFT folder.
ACTION_HEAD_GLOB = "action_head--*_checkpoint.safetensors"
PROPRIO_PROJECTOR_GLOB = "proprio_projector--*_checkpoint.safetensors"
SAVED_STEP = "latest"  # robosteer writes action_head--latest_checkpoint.safetensors


class MLPResNetBlock(nn.Module):
    """``x + ReLU(Linear(LayerNorm(x)))`` (``ffn.0``, ``ffn.1``, ``ffn.2``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(x) + x


class MLPResNet(nn.Module):
    """layer_norm1 -> fc1 -> ReLU -> blocks -> layer_norm2 -> fc2 (OFT's op order)."""

    def __init__(self, n_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList([MLPResNetBlock(hidden_dim) for _ in range(n_blocks)])
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Continuous actions from the chunk's hidden states (trained with an L1 loss in OFT)."""

    def __init__(self, llm_dim: int, action_dim: int, chunk: int, n_blocks: int = 2) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.chunk = chunk
        self.model = MLPResNet(n_blocks, input_dim=llm_dim * action_dim, hidden_dim=llm_dim, output_dim=action_dim)

    def predict_action(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, K*A, D)`` hidden states -> ``(B, K, A)`` normalised actions."""
        if hidden.ndim != 3 or hidden.shape[1] != self.chunk * self.action_dim:
            raise ValueError(f"the action head reads (B, {self.chunk * self.action_dim}, D) hidden states "
                             f"(chunk {self.chunk} x action_dim {self.action_dim}), got {tuple(hidden.shape)}")
        return self.model(hidden.reshape(hidden.shape[0], self.chunk, -1))

    forward = predict_action


class ProprioProjector(nn.Module):
    """OFT's proprio projector: ``fc2(GELU(fc1(proprio)))``, (B, P) -> (B, D)."""

    def __init__(self, llm_dim: int, proprio_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


# --- sequences ------------------------------------------------------------------------------
def action_slot_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, n_actions: int) -> torch.Tensor:
    """(B, L) bool: the ``n_actions`` text positions right before each row's last (stop) token.

    A parallel-decoding row is ``prompt + n_actions slots + stop``, right-padded; the row's length
    comes from ``attention_mask`` (the whole width when it is None).
    """
    b, width = input_ids.shape
    lengths = (attention_mask.sum(dim=1).to(torch.long) if attention_mask is not None
               else torch.full((b,), width, dtype=torch.long, device=input_ids.device))
    if bool((lengths < n_actions + 2).any()):
        raise ValueError(f"a parallel-decoding row needs BOS + {n_actions} action slots + the stop token; "
                         f"got row lengths {lengths.tolist()}")
    index = torch.arange(width, device=input_ids.device)[None]
    stop = (lengths - 1).to(input_ids.device)[:, None]
    return (index >= stop - n_actions) & (index < stop)


def with_action_slots(prompt_ids: torch.Tensor, n_actions: int) -> torch.Tensor:
    """OFT's ``_prepare_input_for_action_prediction``: prompt (B, L) + ``n_actions`` slot ids + the stop id."""
    b = prompt_ids.shape[0]
    slots = torch.full((b, n_actions), SLOT_ID, dtype=prompt_ids.dtype, device=prompt_ids.device)
    stop = torch.full((b, 1), STOP_ID, dtype=prompt_ids.dtype, device=prompt_ids.device)
    return torch.cat([prompt_ids, slots, stop], dim=1)


def bidirectional_mask(attention_mask: torch.Tensor | None, batch: int, length: int, dtype: torch.dtype,
                       device: torch.device) -> torch.Tensor:
    """(B, 1, S, S) additive mask: 0 where the key is a real position, the dtype's minimum on padding."""
    if attention_mask is None:
        return torch.zeros(batch, 1, length, length, dtype=dtype, device=device)
    keep = attention_mask.to(device=device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, S)
    mask = torch.zeros(batch, 1, 1, length, dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)
    return mask.expand(batch, 1, length, length)


# --- OFT's normalisation --------------------------------------------------------------------
def _bounds(stats: dict, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    low_key, high_key = ("q01", "q99") if kind == "bounds_q99" else ("min", "max")
    low = np.asarray(stats[low_key], dtype=np.float64)
    high = np.asarray(stats[high_key], dtype=np.float64)
    mask = np.asarray(stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
    return low, high, mask


def oft_normalize(values: Any, stats: dict, kind: str) -> np.ndarray:
    """OFT's ``normalize_proprio``: ``clip(where(mask, 2 (x - low) / (high - low + 1e-8) - 1, x), -1, 1)``."""
    low, high, mask = _bounds(stats, kind)
    x = np.asarray(values, dtype=np.float64)
    return np.clip(np.where(mask, 2 * (x - low) / (high - low + 1e-8) - 1, x), -1.0, 1.0)


def oft_unnormalize(values: Any, stats: dict, kind: str) -> np.ndarray:
    """OFT's ``_unnormalize_actions``: ``where(mask, 0.5 (a + 1) (high - low + 1e-8) + low, a)``, no clipping."""
    low, high, mask = _bounds(stats, kind)
    a = np.asarray(values)  # kept in its dtype: OFT adds 1 and halves the float32 head output before the float64 stats
    if a.shape[-1] != low.shape[0]:
        raise ValueError(f"action has {a.shape[-1]} dims but the statistics have {low.shape[0]}")
    return np.where(mask, 0.5 * (a + 1) * (high - low + 1e-8) + low, a)


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the DDP ``module.`` prefix that OFT's ``finetune.py`` leaves on every key."""
    return {k.removeprefix("module."): v for k, v in state.items()}


# --- several views ----------------------------------------------------------------------------
def preprocess_views(processor: Any, images: Any, n_views: int) -> torch.Tensor:
    """Observations of ``n_views`` images each -> (B, n_views * C, S, S), view 0's channels first (OFT's layout).

    ``images``: one observation (a (V, H, W, 3) array or a list of V images) or a batch (a (B, V, H, W, 3)
    array or a list of such observations).
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        batch = [images] if images.ndim == 4 else list(images) if images.ndim == 5 else None
        if batch is None:
            raise ValueError(f"{n_views}-view images must be (V, H, W, 3) or (B, V, H, W, 3), got shape {images.shape}")
    elif isinstance(images, (list, tuple)) and images:
        nested = isinstance(images[0], (list, tuple)) or (isinstance(images[0], np.ndarray) and images[0].ndim == 4)
        batch = list(images) if nested else [images]
    else:
        raise ValueError(f"this model takes {n_views} images per observation: pass a list of {n_views} images "
                         f"(or a batch of such lists), got {type(images).__name__}")
    out = []
    for row, views in enumerate(batch):
        if len(views) != n_views:
            raise ValueError(f"observation {row} has {len(views)} image(s); this model takes {n_views} (n_views)")
        pixels = processor(list(views))  # (V, C, S, S)
        out.append(pixels.reshape(1, -1, *pixels.shape[2:]))
    return torch.cat(out, dim=0)


# --- one-pass chunk prediction --------------------------------------------------------------
@dataclass
class ChunkPrediction:
    """What ``vla.predict_chunk`` returns."""

    actions: np.ndarray  # (B, K, A) float64, un-normalised
    normalized: torch.Tensor  # (B, K, A): the head's output (not clipped)
    hidden: torch.Tensor  # (B, K*A, D): the final hidden states the head read


def predict_chunk(vla: Any, input_ids: torch.Tensor, pixel_values: torch.Tensor, proprio: torch.Tensor | None,
                  action_stats: dict) -> ChunkPrediction:
    """OFT's ``predict_action`` for an L1-regression model: one bidirectional pass over prompt + slots + stop.

    The head reads the final hidden states at ``[last prompt token, +K*A)`` (OFT's
    ``NUM_PATCHES + NUM_PROMPT_TOKENS`` slice, one before the slots: the next-token shift).
    """
    cfg = vla.config
    n = vla.n_action_slots
    ids = with_action_slots(input_ids.to(vla.device), n)
    if ids.shape[0] == 1 and pixel_values.shape[0] > 1:
        ids = ids.expand(pixel_values.shape[0], -1)
    out = vla(input_ids=ids, pixel_values=pixel_values, proprio=proprio, output_hidden_states=True, logits_to_keep=1)
    start = vla.n_prefix - 1 + (input_ids.shape[1] - 1)  # the last prompt token's position
    hidden = out.hidden_states[-1][:, start:start + n]
    head = vla.action_head
    normalized = head.predict_action(hidden.to(head.model.fc1.weight.dtype))
    values = normalized.float().cpu().numpy()
    if cfg.normalization == "openvla":
        from .action_tokenizer import unnormalize

        actions = unnormalize(values.astype(np.float64), action_stats)
    else:
        actions = oft_unnormalize(values, action_stats, cfg.normalization)
    return ChunkPrediction(actions=actions, normalized=normalized, hidden=hidden)


def chunk_from_hidden(vla: Any, hidden: torch.Tensor, batch: Any) -> torch.Tensor:
    """(B, K, A) normalised chunks from the final hidden states ``(B, S, D)`` of a ``ModelBatch``'s forward pass.

    The head reads the hidden states at ``batch.predicting(batch.action_positions)`` (one before each action
    slot, as OFT trains and predicts).
    """
    return chunk_at(vla, hidden, batch.predicting(batch.action_positions))


def chunk_at(vla: Any, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, K, A) normalised chunks read by the head from ``hidden`` (B, S, D) at ``positions`` (B, K*A)."""
    index = positions.to(hidden.device)
    picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    return vla.action_head.predict_action(picked.to(vla.action_head.model.fc1.weight.dtype))


def chunk_from_batch(vla: Any, batch: Any) -> torch.Tensor:
    """(B, K, A) normalised chunks for a ``ModelBatch`` of a regression-head model, in one forward pass.

    Gradients flow (wrap in ``torch.no_grad()`` to predict).
    """
    out = vla(**batch.model_inputs(), output_hidden_states=True, logits_to_keep=1)
    return chunk_from_hidden(vla, out.hidden_states[-1], batch)


def l1_action_loss(vla: Any, batch: Any, hidden: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """OFT's training loss: absolute error between the predicted and the target normalised chunks.

    ``hidden``: the final hidden states of a forward pass already made (the trainer's, through its wrapped
    model); without it the model runs here. ``reduction="sum"`` sums over every action value (for averaging
    across processes).
    """
    if batch.actions is None:
        raise ValueError("the batch has no continuous action targets (build it for a regression-head model)")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    predicted = chunk_from_batch(vla, batch) if hidden is None else chunk_from_hidden(vla, hidden, batch)
    return torch.nn.functional.l1_loss(predicted.float(), batch.actions.to(predicted.device).float(),
                                       reduction=reduction)

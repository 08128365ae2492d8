"""OpenVLA's action tokenizer: continuous actions in [-1, 1] <-> the last 256 ids of the vocabulary.

``np.linspace(-1, 1, n_bins)`` gives the bin edges and their midpoints the 255
centres. A value maps to ``vocab_end - np.digitize(value, bins)``; a token maps back
to ``centres[clip(vocab_end - id - 1, 0, n_bins - 2)]`` (so ids below the range
clip to the top centre and ids at or above ``vocab_end`` to the bottom one).

Usage::

    tok = ActionTokenizer(vocab_end=32000)
    ids = tok.encode(np.array([0.1, -0.5, 1.0]))
    values = tok.decode(ids)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .constants import LLAMA2_ACTION_VOCAB_END, N_ACTION_BINS


@dataclass(frozen=True)
class ActionTokenizer:
    vocab_end: int = LLAMA2_ACTION_VOCAB_END  # action ids are [vocab_end - n_bins, vocab_end)
    n_bins: int = N_ACTION_BINS

    def __post_init__(self) -> None:
        if self.n_bins < 2 or self.vocab_end < self.n_bins:
            raise ValueError(f"invalid action vocabulary: vocab_end={self.vocab_end}, n_bins={self.n_bins}")

    @property
    def bins(self) -> np.ndarray:
        return np.linspace(-1, 1, self.n_bins)

    @property
    def bin_centers(self) -> np.ndarray:
        bins = self.bins
        return (bins[:-1] + bins[1:]) / 2.0

    @property
    def first_id(self) -> int:
        return self.vocab_end - self.n_bins

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions (..., A) -> token ids (..., A), int64."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return (self.vocab_end - np.digitize(clipped, self.bins)).astype(np.int64)

    def decode(self, ids) -> np.ndarray:
        """Token ids (..., A) -> normalised actions (..., A), float64."""
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        idx = np.clip(self.vocab_end - np.asarray(ids, dtype=np.int64) - 1, 0, self.n_bins - 2)
        return self.bin_centers[idx]

    def is_action(self, ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the ids that are action tokens."""
        return (ids >= self.first_id) & (ids < self.vocab_end)


def unnormalize(actions: np.ndarray, stats: dict) -> np.ndarray:
    """OpenVLA's un-normalisation: ``where(mask, 0.5 (x + 1) (q99 - q01) + q01, x)``."""
    q01 = np.asarray(stats["q01"], dtype=np.float64)
    q99 = np.asarray(stats["q99"], dtype=np.float64)
    mask = np.asarray(stats.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
    if actions.shape[-1] != q01.shape[0]:
        raise ValueError(f"action has {actions.shape[-1]} dims but the statistics have {q01.shape[0]}")
    return np.where(mask, 0.5 * (actions + 1) * (q99 - q01) + q01, actions)


def normalize(actions: np.ndarray, stats: dict) -> np.ndarray:
    """Inverse of :func:`unnormalize` (clipped to [-1, 1]) for building training targets."""
    q01 = np.asarray(stats["q01"], dtype=np.float64)
    q99 = np.asarray(stats["q99"], dtype=np.float64)
    mask = np.asarray(stats.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
    scaled = 2 * (np.asarray(actions, dtype=np.float64) - q01) / np.maximum(q99 - q01, 1e-8) - 1
    return np.clip(np.where(mask, scaled, actions), -1.0, 1.0)

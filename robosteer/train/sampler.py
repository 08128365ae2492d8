"""The data order: which frames make up the global batch of each step, as a pure function of (seed, step).

Frames are visited in epochs; each epoch is a fresh permutation drawn from a generator
seeded with ``(seed, epoch)``. Position ``p = step_index * batch_size + slot`` of the
stream is frame ``perm(p // n)[p % n]``. Because it is stateless, a resumed run sees
exactly the frames the uninterrupted run would have, and every process of a
multi-process run agrees on the global batch without communicating (each takes its
own contiguous share).

Usage::

    order = DataOrder(n_frames=len(frames), seed=0)
    global_indices = order.batch(step_index=5, batch_size=16)   # list of 16 frame indices
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DataOrder:
    """Seeded epoch-wise shuffling over ``n_frames`` frames."""

    n_frames: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_frames <= 0:
            raise ValueError(f"DataOrder needs at least one frame, got n_frames={self.n_frames}")

    def permutation(self, epoch: int) -> np.ndarray:
        """The frame order of one epoch (seeded by ``(seed, epoch)``)."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_frames)

    def batch(self, step_index: int, batch_size: int) -> list[int]:
        """Frame indices of the ``step_index``-th (0-based) global batch."""
        start = step_index * batch_size
        out, cache = [], {}
        for pos in range(start, start + batch_size):
            epoch = pos // self.n_frames
            if epoch not in cache:
                cache[epoch] = self.permutation(epoch)
            out.append(int(cache[epoch][pos % self.n_frames]))
        return out

    def position(self, steps_done: int, batch_size: int) -> dict[str, int]:
        """``{"epoch", "index"}`` after ``steps_done`` steps (recorded in checkpoints)."""
        pos = steps_done * batch_size
        return {"epoch": pos // self.n_frames, "index": pos % self.n_frames}

"""Helpers shared by the training tests and the two-process worker: tiny models and synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def tiny_train_vla(seed: int = 0, **overrides):
    """A tiny OpenVLA with GQA (4 query heads, 2 KV heads), two towers and a proprio input."""
    from robosteer.models.tiny import tiny_vla

    kwargs = dict(image_size=16, patch_size=8, llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_dim=32, proprio_dim=7,
                  dino=(24, 3, 2), siglip=(16, 3, 2))
    kwargs.update(overrides)
    return tiny_vla(seed=seed, **kwargs)


def make_frames(n: int = 12, image_size: int = 16, proprio_dim: int = 7, seed: int = 0) -> list[dict]:
    """Synthetic demonstration frames with two instructions of different lengths."""
    rng = np.random.default_rng(seed)
    instructions = ["pick up the red cube", "push the blue block to the left of the plate"]
    frames = []
    for i in range(n):
        frame = {"image": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8),
                 "instruction": instructions[i % 2],
                 "action": np.concatenate([rng.uniform(-1, 1, 6), [float(i % 2)]])}
        if proprio_dim:
            frame["proprio"] = rng.uniform(-1, 1, proprio_dim)
        frames.append(frame)
    return frames


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run each training test module on one torch thread: tiny ops thrash with 2 threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

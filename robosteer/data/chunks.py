"""Action chunks: each frame's target becomes its next K actions, for models that predict K per pass.

OpenVLA-OFT trains on chunks of the K actions that follow an observation; near the end of an
episode the chunk is padded with the episode's last action (the robot holds its final command),
as OFT's data pipeline and LeRobot's ``delta_timestamps`` loaders do. ``ActionChunks`` wraps any
frame dataset (``DemoDataset``, ``LeRobotDataset``, ``ConcatFrames``) without copying images.

Usage::

    chunks = ActionChunks(DemoDataset("demos/lift"), chunk=8)
    chunks[0].action.shape            # (8, 7): steps 0..7 of episode 0
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .frames import Frame


def chunk_indices(episode: np.ndarray, step: np.ndarray, chunk: int) -> np.ndarray:
    """(N, K) frame indices of each frame's next ``chunk`` steps in its episode, the last step repeated at the end."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    episode, step = np.asarray(episode), np.asarray(step)
    if episode.shape != step.shape or episode.ndim != 1:
        raise ValueError(f"episode and step must be equally long vectors, got {episode.shape} and {step.shape}")
    order = np.lexsort((step, episode))  # frames sorted by episode, then step
    out = np.empty((len(order), chunk), dtype=np.int64)
    bounds = np.flatnonzero(np.diff(episode[order])) + 1
    for run in np.split(order, bounds):  # one episode's frames in step order
        pos = np.minimum(np.arange(len(run))[:, None] + np.arange(chunk)[None], len(run) - 1)
        out[run] = run[pos]
    return out


class ActionChunks:
    """A frame dataset whose frames carry ``(K, A)`` action chunks (everything else as the base gives it)."""

    def __init__(self, base, chunk: int) -> None:
        for name in ("actions", "episode_index", "step_index"):
            if not hasattr(base, name):
                raise ValueError(f"ActionChunks needs a frame dataset with .{name} ({type(base).__name__} has none)")
        self.base, self.chunk = base, int(chunk)
        self.index = chunk_indices(base.episode_index, base.step_index, self.chunk)  # (N, K)
        self.actions = np.asarray(base.actions)[self.index]  # (N, K, A)
        self.episode_index, self.step_index = base.episode_index, base.step_index
        self.proprio, self.tasks = base.proprio, base.tasks
        self.cameras = getattr(base, "cameras", ())
        self.image_size = getattr(base, "image_size", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Frame:
        frame = self.base[i]
        return dataclasses.replace(frame, action=self.actions[int(i)])

    def image(self, i: int) -> np.ndarray:
        return self.base.image(i)

    def __getattr__(self, name: str):  # statistics, states, meta ... of the base dataset
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

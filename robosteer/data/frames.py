"""One interface over step-level robot data, whatever its source on disk.

:class:`FrameDataset` holds per-step arrays (actions, proprio, keyframe flags,
episode and step indices, instructions) and fetches images lazily through its
subclass. ``DemoDataset`` (``dataset.py``, this toolkit's demos) and
``LeRobotDataset`` (``lerobot.py``, a local LeRobot folder) both implement it, so
training and head discovery read either the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .keyframes import KEYFRAME_NAMES


@dataclass
class Frame:
    """One step: what the policy saw and what it did."""

    image: np.ndarray  # (H, W, 3) uint8, upright
    instruction: str
    action: np.ndarray  # (7,) float32
    proprio: np.ndarray  # (P,) float32
    keyframes: dict[str, bool]  # KEYFRAME_NAMES -> flag
    episode: int
    step: int
    task: str
    state: np.ndarray | None = None  # (6,) privileged target/goal positions (sim.expert.STATE_NAMES), if recorded

    def as_record(self) -> dict:
        """The mapping the head recorders and probe builders take (one ``keyframe`` flag: any kind)."""
        return {"image": self.image, "instruction": self.instruction, "action": np.asarray(self.action, dtype=np.float64),
                "proprio": self.proprio, "episode": int(self.episode), "step": int(self.step),
                "keyframe": any(bool(v) for v in self.keyframes.values()), "task": self.task}


class FrameDataset:
    """Base class: ``len(ds)``, ``ds[i]`` -> :class:`Frame`, ``ds.batches(32)``."""

    def __init__(self, *, episode, step, action, proprio, keyframes: dict, instructions, tasks) -> None:
        self.episode_index = np.asarray(episode, dtype=np.int64)  # (N,)
        self.step_index = np.asarray(step, dtype=np.int64)  # (N,)
        self.actions = np.asarray(action, dtype=np.float32)  # (N, 7)
        self.proprio = np.asarray(proprio, dtype=np.float32)  # (N, P)
        self.keyframes = {k: np.asarray(keyframes[k], dtype=bool) for k in KEYFRAME_NAMES}  # name -> (N,)
        self.instructions = list(instructions)  # (N,) str
        self.tasks = list(tasks)  # (N,) str
        self.states: np.ndarray | None = None  # (N, 6) privileged state, when the source has it (training targets only)
        n = len(self.actions)
        for name, values in (("episode", self.episode_index), ("step", self.step_index), ("proprio", self.proprio)):
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} rows but action has {n}")

    # Subclasses fetch images.
    def image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 image of frame ``i``."""
        raise NotImplementedError

    def images(self, indices) -> np.ndarray:
        """(B, H, W, 3) uint8 images of several frames."""
        return np.stack([self.image(int(i)) for i in indices])

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, i: int) -> Frame:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        i %= len(self)
        return Frame(
            image=self.image(i),
            instruction=self.instructions[i],
            action=self.actions[i],
            proprio=self.proprio[i],
            keyframes={k: bool(v[i]) for k, v in self.keyframes.items()},
            episode=int(self.episode_index[i]),
            step=int(self.step_index[i]),
            task=self.tasks[i],
            state=None if self.states is None else self.states[i],
        )

    @property
    def num_episodes(self) -> int:
        return len(np.unique(self.episode_index))

    def episode_frames(self, episode: int) -> np.ndarray:
        """Frame indices of one episode, in step order."""
        idx = np.flatnonzero(self.episode_index == episode)
        return idx[np.argsort(self.step_index[idx], kind="stable")]

    def keyframe_indices(self, name: str) -> np.ndarray:
        """Indices of frames with a keyframe flag: ``ds.keyframe_indices("gripper_flip")``."""
        if name not in self.keyframes:
            raise ValueError(f"unknown keyframe flag {name!r}; known: {', '.join(KEYFRAME_NAMES)}")
        return np.flatnonzero(self.keyframes[name])

    def batch(self, indices) -> dict:
        """Stacked frames: images (B,H,W,3) uint8, instructions list, action (B,7), proprio,
        keyframes (B, len(KEYFRAME_NAMES)) bool in KEYFRAME_NAMES order, episode, step."""
        indices = np.asarray(indices, dtype=np.int64)
        return {
            "images": self.images(indices),
            "instructions": [self.instructions[i] for i in indices],
            "actions": self.actions[indices],
            "proprio": self.proprio[indices],
            "keyframes": np.stack([self.keyframes[k][indices] for k in KEYFRAME_NAMES], axis=1),
            "episode": self.episode_index[indices],
            "step": self.step_index[indices],
        }

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False, indices=None) -> Iterator[dict]:
        """``for b in ds.batches(64, seed=epoch): ...`` over all frames (or ``indices``)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        order = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        if shuffle:
            order = np.random.default_rng(seed).permutation(order)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])


class ConcatFrames:
    """Several frame datasets read as one (what training reads: ``len``, ``[i]``, ``image(i)``, ``tasks``).

    Episode ids are offset so that they stay distinct across the parts.
    """

    def __init__(self, parts) -> None:
        self.parts = list(parts)
        if not self.parts:
            raise ValueError("ConcatFrames needs at least one dataset")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.episode_offsets = np.cumsum([0] + [int(p.episode_index.max()) + 1 if len(p) else 0 for p in self.parts])
        self.tasks = [t for p in self.parts for t in p.tasks]
        self.actions = np.concatenate([p.actions for p in self.parts])
        self.proprio = np.concatenate([p.proprio for p in self.parts])
        self.episode_index = np.concatenate([p.episode_index + o for p, o in zip(self.parts, self.episode_offsets)])
        self.image_size = getattr(self.parts[0], "image_size", None)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        part = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return part, i - int(self.offsets[part])

    def __getitem__(self, i: int) -> Frame:
        part, j = self._locate(int(i))
        frame = self.parts[part][j]
        frame.episode = int(frame.episode + self.episode_offsets[part])
        return frame

    def image(self, i: int) -> np.ndarray:
        part, j = self._locate(int(i))
        return self.parts[part].image(j)

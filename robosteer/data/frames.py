"""One frame type for every consumer, and one interface over step-level robot data.

:class:`Frame` is one step (observation, instruction, action): what datasets return and
what the sequence builder (``robosteer.models.sequence``), the trainer, the head recorders
and the probes take. A plain mapping from a user (``{"image", "instruction", "action",
"proprio", "episode", "step", "keyframe"}``) becomes a ``Frame`` once, at the entry point
of those functions, through :meth:`Frame.coerce`; :func:`check_frame` validates a frame
against a model's action and proprio sizes.

:class:`FrameDataset` holds per-step arrays (actions, proprio, keyframe flags,
episode and step indices, instructions) and fetches images lazily through its
subclass. ``DemoDataset`` (``dataset.py``, this toolkit's demos) and
``LeRobotDataset`` (``lerobot.py``, a local LeRobot folder) both implement it, so
training and head discovery read either the same way.

Several camera views per observation: ``Frame.image`` is always the main (first) view, as
with one camera; a multi-camera frame also carries ``Frame.views``, every view by camera
name in the dataset's fixed order (``{"agentview": ..., "wrist": ...}``; its first entry is
``image``), and ``Frame.images`` is the tuple of views in that order (``(image,)`` for a
single-camera frame, whose ``views`` stays empty). A dataset's ``cameras`` names the views.

Usage::

    frame = Frame.coerce({"image": img, "instruction": "pick up the red cube", "action": a})
    frame = DemoDataset("demos/lift")[0]
    check_frame(frame, 0, action_dim=7, proprio_dim=7)
    frame.images                       # (agentview,) or (agentview, wrist): every view, fixed order
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from .keyframes import KEYFRAME_NAMES

REQUIRED = ("image", "instruction", "action")  # what every frame must have


@dataclass
class Frame:
    """One step: what the policy saw and what it did."""

    image: np.ndarray  # (H, W, 3) uint8, upright
    instruction: str
    action: np.ndarray  # (A,) float (a dataset's float32 or a user's float64), raw (un-normalised)
    proprio: np.ndarray | None = None  # (P,) float raw robot state; None for a model without a proprio input
    keyframes: dict[str, bool] = field(default_factory=dict)  # KEYFRAME_NAMES -> flag (a user's one flag: "keyframe")
    episode: int = 0
    step: int | None = None  # index within the episode; None when unknown (the recorders then number the frames)
    task: str = ""
    state: np.ndarray | None = None  # (6,) privileged target/goal positions (sim.expert.STATE_NAMES), if recorded
    views: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8, every view in order; empty with one camera

    @property
    def images(self) -> tuple[np.ndarray, ...]:
        """Every view in camera order (``(image,)`` for a single-camera frame); the first is ``image``."""
        return tuple(self.views.values()) if self.views else (self.image,)

    @property
    def keyframe(self) -> bool:
        """True when any keyframe flag is set (what the head recorders select by)."""
        return any(bool(v) for v in self.keyframes.values())

    @classmethod
    def coerce(cls, frame: Any, where: str = "frame") -> "Frame":
        """``Frame.coerce(x)``: ``x`` itself if it is a ``Frame``, else a ``Frame`` from a mapping.

        The mapping needs ``image``, ``instruction`` and ``action``; it may have ``proprio``,
        ``episode``, ``step`` (or ``frame``), ``keyframe`` (one flag) or ``keyframes`` (name -> flag),
        ``task``, ``state`` and ``views`` (camera -> image, in order; its first image is ``image``);
        other keys are ignored. ``where`` names the frame in errors.
        """
        if isinstance(frame, Frame):
            return frame
        if not isinstance(frame, Mapping):
            raise TypeError(f"{where} is a {type(frame).__name__}; expected a robosteer.data.frames.Frame or a "
                            f"mapping with {', '.join(REQUIRED)}")
        missing = [k for k in REQUIRED if k not in frame]
        if missing:
            raise ValueError(f"{where} lacks {missing}; a frame needs {', '.join(REQUIRED)} (and proprio for a model "
                             "with a proprio input)")
        if "keyframes" in frame:
            keyframes = {str(k): bool(v) for k, v in dict(frame["keyframes"]).items()}
        else:
            keyframes = {"keyframe": bool(frame["keyframe"])} if "keyframe" in frame else {}
        step = frame.get("step", frame.get("frame"))
        optional = {k: None if frame.get(k) is None else np.asarray(frame[k]) for k in ("proprio", "state")}
        if frame.get("views"):
            if not isinstance(frame["views"], Mapping):
                raise TypeError(f"{where}: views must be a mapping camera -> image, got {type(frame['views']).__name__}")
            optional["views"] = {str(k): np.asarray(v) for k, v in frame["views"].items()}
        return cls(image=np.asarray(frame["image"]), instruction=frame["instruction"],
                   action=np.asarray(frame["action"]), keyframes=keyframes, episode=int(frame.get("episode", 0)),
                   step=None if step is None else int(step), task=str(frame.get("task", "")), **optional)


def check_frame(frame: Frame, index: int, action_dim: int, proprio_dim: int, chunk: int = 1) -> None:
    """Raise a clear ``ValueError`` unless ``frame`` fits a model with these action and proprio sizes.

    ``chunk`` actions per step: the action is ``(action_dim,)`` for one, ``(chunk, action_dim)`` for several.
    """
    if proprio_dim and frame.proprio is None:
        raise ValueError(f"frame {index} has no proprio; this model takes a proprio input of {proprio_dim} dims")
    image = np.asarray(frame.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frame {index}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    for name, view in frame.views.items():
        view = np.asarray(view)
        if view.dtype != np.uint8 or view.ndim != 3 or view.shape[2] != 3:
            raise ValueError(f"frame {index}: view {name!r} must be uint8 (H, W, 3), got {view.dtype} {view.shape}")
    if not isinstance(frame.instruction, str) or not frame.instruction.strip():
        raise ValueError(f"frame {index}: instruction must be a non-empty string")
    action_shape = (action_dim,) if chunk == 1 else (chunk, action_dim)
    for key, shape in (("action", action_shape), ("proprio", (proprio_dim,) if proprio_dim else None)):
        if shape is None:
            continue
        value = np.asarray(getattr(frame, key), dtype=np.float64)
        if value.shape != shape:
            hint = (f" (the model predicts chunks of {chunk} actions: give each frame its next {chunk} actions, "
                    f"e.g. robosteer.data.ActionChunks(dataset, {chunk}))" if key == "action" and chunk > 1 else "")
            raise ValueError(f"frame {index}: {key} must have shape {shape} to match the model's statistics, "
                             f"got {value.shape}{hint}")
        if not np.isfinite(value).all():
            raise ValueError(f"frame {index}: {key} has non-finite values")


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
        self.cameras: tuple[str, ...] = ()  # view names in order when the source has several cameras (else empty)
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

    def view(self, i: int, camera: str) -> np.ndarray:
        """(H, W, 3) uint8 image of one camera of frame ``i`` (subclasses with several cameras)."""
        if self.cameras and camera == self.cameras[0]:
            return self.image(i)
        raise ValueError(f"no camera {camera!r} in this dataset; cameras: {list(self.cameras) or ['(one view)']}")

    def views(self, i: int) -> dict[str, np.ndarray]:
        """Every view of frame ``i`` by camera, in ``cameras`` order; empty for a single-camera dataset."""
        if not self.cameras:
            return {}
        first = self.image(i)
        return {c: first if k == 0 else self.view(i, c) for k, c in enumerate(self.cameras)}

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, i: int) -> Frame:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        i %= len(self)
        views = self.views(i)
        return Frame(
            image=next(iter(views.values())) if views else self.image(i),
            instruction=self.instructions[i],
            action=self.actions[i],
            proprio=self.proprio[i],
            keyframes={k: bool(v[i]) for k, v in self.keyframes.items()},
            episode=int(self.episode_index[i]),
            step=int(self.step_index[i]),
            task=self.tasks[i],
            state=None if self.states is None else self.states[i],
            views=views,
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
        keyframes (B, len(KEYFRAME_NAMES)) bool in KEYFRAME_NAMES order, episode, step; with several
        cameras also views (camera -> (B, H, W, 3))."""
        indices = np.asarray(indices, dtype=np.int64)
        return {
            "images": self.images(indices),
            "instructions": [self.instructions[i] for i in indices],
            "actions": self.actions[indices],
            "proprio": self.proprio[indices],
            "keyframes": np.stack([self.keyframes[k][indices] for k in KEYFRAME_NAMES], axis=1),
            "episode": self.episode_index[indices],
            "step": self.step_index[indices],
            **({"views": self._batch_views(indices)} if self.cameras else {}),
        }

    def _batch_views(self, indices) -> dict[str, np.ndarray]:
        per_frame = [self.views(int(i)) for i in indices]
        return {c: np.stack([v[c] for v in per_frame]) for c in self.cameras}

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
        self.step_index = np.concatenate([p.step_index for p in self.parts])
        self.image_size = getattr(self.parts[0], "image_size", None)
        cameras = {tuple(getattr(p, "cameras", ())) for p in self.parts}
        self.cameras = cameras.pop() if len(cameras) == 1 else ()  # the parts' views, when they all have the same

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

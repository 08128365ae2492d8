"""Frames (``data.frames.Frame``) as pi0 inputs: the one place a frame becomes a ``Pi0Inputs`` batch.

The trainer's flow objective, the head recorders and the probes all go through :func:`frame_inputs`.

- **cameras**: a frame with one image feeds the model's first camera; a frame with several views
  feeds the cameras of the same names (``base_0_rgb`` or ``observation.images.base_0_rgb``), or those
  named in ``camera_map`` (``{"agentview": "base_0_rgb"}``); cameras a frame does not feed are empty
  cameras (an all -1 image, masked out of the prefix, as lerobot does).
- **state**: ``Frame.proprio`` (``state_dim`` raw values), normalised by the model.
- **actions**: :func:`frame_actions` gives a frame's demonstrated actions in model space
  (normalised, zero-padded to ``max_action_dim``): a whole chunk ``(chunk_size, action_dim)``, or, where
  a caller allows it (``rows_ok``), the first rows of one (a single ``(action_dim,)`` action is one row).

Usage::

    inputs = frame_inputs(pi0, frames)                        # Pi0Inputs for pi0(inputs=...)
    target = frame_actions(pi0, frames)                       # [B, chunk, max_action_dim]
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ...data.frames import Frame
from .config import IMAGE_PREFIX

ImageTransform = Callable[[int, str, np.ndarray], np.ndarray]  # (frame index, camera, image) -> image


def frame_images(frame: Frame, cameras: Sequence[str], camera_map: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """``{camera: (H, W, 3) uint8}`` this frame feeds (see the module docstring)."""
    names = [c.removeprefix(IMAGE_PREFIX) for c in cameras]
    if not frame.views:
        return {names[0]: frame.image}
    out = {}
    for view, image in frame.views.items():
        name = (camera_map or {}).get(view, view).removeprefix(IMAGE_PREFIX)
        if name in names:
            out[name] = image
    if not out:
        raise ValueError(f"frame views {list(frame.views)} name none of the model's cameras {names}; "
                         "pass camera_map={view: camera}")
    return out


def frame_inputs(pi0: Any, frames: Sequence[Frame | Mapping[str, Any]], camera_map: Mapping[str, str] | None = None,
                 transform: ImageTransform | None = None) -> Any:
    """``Pi0Inputs`` of a batch of frames (images by camera, normalised state, tokenized instructions)."""
    cfg = pi0.config
    frames = [Frame.coerce(f, f"frame {i}") for i, f in enumerate(frames)]
    if not frames:
        raise ValueError("no frames")
    per_frame = [frame_images(f, cfg.image_keys, camera_map) for f in frames]
    cameras = list(per_frame[0])
    if any(list(p) != cameras for p in per_frame):
        raise ValueError("the frames of one batch feed different cameras")
    if transform is not None:
        per_frame = [{c: transform(i, c, img) for c, img in p.items()} for i, p in enumerate(per_frame)]
    images = {c: np.stack([p[c] for p in per_frame]) for c in cameras}
    missing = [i for i, f in enumerate(frames) if f.proprio is None]
    if missing:
        raise ValueError(f"pi0 needs the robot state: frame {missing[0]} has no proprio ({cfg.state_dim} values, "
                         "config.json input_features.observation.state)")
    state = np.stack([np.asarray(f.proprio, np.float32) for f in frames])
    return pi0.prepare_inputs(images, state, instruction=[f.instruction for f in frames])


def frame_actions(pi0: Any, frames: Sequence[Frame], rows_ok: bool = False) -> torch.Tensor:
    """Demonstrated actions in model space ``[B, rows, max_action_dim]``: ``rows = chunk_size``, or with
    ``rows_ok`` the rows every frame gives (``1 <= rows <= chunk_size``, the same for the whole batch)."""
    cfg = pi0.config
    chunks = [_rows(f, cfg, rows_ok) for f in frames]
    if len({c.shape[0] for c in chunks}) != 1:
        raise ValueError(f"the frames of one batch give different numbers of action rows: {[c.shape[0] for c in chunks]}")
    a = torch.from_numpy(np.stack(chunks)).to(pi0.device)
    return torch.nn.functional.pad(pi0.normalizer.action.forward(a), (0, cfg.max_action_dim - cfg.action_dim))


def _rows(frame: Frame, cfg: Any, rows_ok: bool) -> np.ndarray:
    action = np.asarray(frame.action, np.float32)
    if action.ndim == 1:
        action = action[None]
    fits = action.ndim == 2 and action.shape[1] == cfg.action_dim and (
        1 <= action.shape[0] <= cfg.chunk_size if rows_ok else action.shape[0] == cfg.chunk_size)
    if not fits:
        want = f"(rows <= {cfg.chunk_size}, {cfg.action_dim})" if rows_ok else f"({cfg.chunk_size}, {cfg.action_dim})"
        raise ValueError(f"pi0 takes action chunks {want}; frame {frame.episode}/{frame.step} has an action of shape "
                         f"{np.shape(frame.action)} (wrap the dataset in robosteer.data.chunks.ActionChunks(ds, "
                         f"{cfg.chunk_size}))")
    return action

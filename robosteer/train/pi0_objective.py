"""pi0's training step: flow matching on action chunks, as lerobot's ``PI0Policy.forward`` trains it.

Each frame gives its cameras' images, its instruction, its robot state (``Frame.proprio``) and an
action chunk ``(chunk_size, action_dim)`` (wrap a dataset in ``data.chunks.ActionChunks(ds, chunk_size)``).
Actions are normalised with the model's postprocessor statistics and zero-padded to ``max_action_dim``;
each example draws its noise and its flow time ``Beta(1.5, 1) * 0.999 + 0.001`` from its own seed
``(seed, step, slot)``, so a resumed run draws what an uninterrupted one draws. The loss is the mean of
``mse(noise - actions, v_t)`` over the real action dimensions (lerobot truncates the padding too).

Cameras: a frame with one image feeds the model's first camera; a frame with several views feeds the
cameras of the same names (``base_0_rgb`` or ``observation.images.base_0_rgb``), or those named in
``camera_map`` (``{"agentview": "base_0_rgb"}``); cameras a frame does not feed are empty cameras.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..data.frames import Frame
from .augment import augment_image
from .config import TrainConfig, augment_config

IMAGE_PREFIX = "observation.images."


@dataclass
class FlowBatch:
    """Model-space inputs, actions ``[B, chunk, max_action_dim]``, noise and flow time of one batch."""

    inputs: Any  # models.pi0.model.Pi0Inputs
    actions: torch.Tensor
    noise: torch.Tensor
    time: torch.Tensor
    action_dim: int
    n_sequence_tokens: int  # prefix + suffix positions of the whole batch (for the tokens/s metric)

    def to(self, device: Any) -> "FlowBatch":
        inputs = replace(self.inputs, pixels=[p.to(device) for p in self.inputs.pixels],
                         image_masks=[m.to(device) for m in self.inputs.image_masks],
                         input_ids=self.inputs.input_ids.to(device), attention_mask=self.inputs.attention_mask.to(device),
                         state=self.inputs.state.to(device))
        return FlowBatch(inputs, self.actions.to(device), self.noise.to(device), self.time.to(device), self.action_dim,
                         self.n_sequence_tokens)


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


class FlowObjective:
    """``collate`` frames into a :class:`FlowBatch`; ``loss`` = summed elementwise flow loss and its count."""

    def __init__(self, pi0: Any, config: TrainConfig, camera_map: Mapping[str, str] | None = None) -> None:
        if config.label_smoothing:
            raise ValueError(f"TrainConfig.label_smoothing={config.label_smoothing} smooths action tokens; pi0 predicts "
                             "continuous action chunks: set it to 0")
        self.pi0 = pi0
        self.augment = augment_config(config)
        self.camera_map = dict(camera_map or {})

    def length(self, frame: Any) -> int:
        return 1  # every pi0 example has the same shape (fixed-length prompt and chunk)

    def _noise_and_time(self, seed: Any) -> tuple[np.ndarray, float]:
        cfg = self.pi0.config
        rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 7])  # apart from the augmentation's stream
        noise = rng.standard_normal((cfg.chunk_size, cfg.max_action_dim)).astype(np.float32)
        time = rng.beta(cfg.time_beta_alpha, cfg.time_beta_beta) * cfg.time_scale + cfg.time_offset
        return noise, float(time)

    def collate(self, frames: Sequence[Any], seeds: Sequence[Any], pad_to: int | None = None) -> FlowBatch:
        cfg = self.pi0.config
        frames = [Frame.coerce(f, f"frame {i}") for i, f in enumerate(frames)]
        per_frame = [frame_images(f, cfg.image_keys, self.camera_map) for f in frames]
        cameras = set(per_frame[0])
        if any(set(p) != cameras for p in per_frame):
            raise ValueError("the frames of one batch feed different cameras")
        if self.augment is not None:
            per_frame = [{c: augment_image(img, np.random.default_rng(seed), self.augment) for c, img in p.items()}
                         for p, seed in zip(per_frame, seeds)]
        images = {c: np.stack([p[c] for p in per_frame]) for c in cameras}
        if any(f.proprio is None for f in frames):
            raise ValueError(f"pi0 needs the robot state: frames must carry proprio ({cfg.state_dim} values)")
        state = np.stack([np.asarray(f.proprio, np.float32) for f in frames])
        actions = np.stack([self._chunk(f) for f in frames])
        drawn = [self._noise_and_time(s) for s in seeds]
        inputs = self.pi0.prepare_inputs(images, state, instruction=[f.instruction for f in frames])
        a = torch.from_numpy(actions).to(inputs.state.device)
        a = torch.nn.functional.pad(self.pi0.normalizer.action.forward(a), (0, cfg.max_action_dim - cfg.action_dim))
        noise = torch.from_numpy(np.stack([n for n, _ in drawn])).to(a.device)
        time = torch.tensor([t for _, t in drawn], dtype=torch.float32, device=a.device)
        return FlowBatch(inputs, a, noise, time, cfg.action_dim, len(frames) * (cfg.prefix_len + 1 + cfg.chunk_size))

    def _chunk(self, frame: Frame) -> np.ndarray:
        cfg = self.pi0.config
        action = np.asarray(frame.action, np.float32)
        if action.ndim == 1 and cfg.chunk_size == 1:
            action = action[None]
        if action.shape != (cfg.chunk_size, cfg.action_dim):
            raise ValueError(f"pi0 trains on action chunks ({cfg.chunk_size}, {cfg.action_dim}); frame {frame.episode}/"
                             f"{frame.step} has an action of shape {action.shape} (wrap the dataset in "
                             f"robosteer.data.chunks.ActionChunks(ds, {cfg.chunk_size}))")
        return action

    def loss(self, model: torch.nn.Module, batch: FlowBatch) -> tuple[torch.Tensor, int, int]:
        losses = model(inputs=batch.inputs, actions=batch.actions, noise=batch.noise, time=batch.time).losses
        real = losses[..., : batch.action_dim]
        return real.sum(), real.numel(), batch.n_sequence_tokens

"""pi0's training step: flow matching on action chunks, as lerobot's ``PI0Policy.forward`` trains it.

Each frame gives its cameras' images, its instruction, its robot state (``Frame.proprio``) and an
action chunk ``(chunk_size, action_dim)`` (wrap a dataset in ``data.chunks.ActionChunks(ds, chunk_size)``).
Actions are normalised with the model's postprocessor statistics and zero-padded to ``max_action_dim``;
each example draws its noise and its flow time ``Beta(1.5, 1) * 0.999 + 0.001`` from its own seed
``(seed, step, slot)``, so a resumed run draws what an uninterrupted one draws. The loss is the mean of
``mse(noise - actions, v_t)`` over the real action dimensions (lerobot truncates the padding too).

Frames become model inputs through ``models.pi0.frames`` (cameras by name or ``camera_map``, empty
cameras for the rest, the state from ``Frame.proprio``), as they do for the head recorders and probes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..data.frames import Frame
from ..models.pi0.frames import frame_actions, frame_inputs
from .augment import augment_image
from .config import TrainConfig, augment_config


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
        return FlowBatch(self.inputs.to(device), self.actions.to(device), self.noise.to(device), self.time.to(device), self.action_dim,
                         self.n_sequence_tokens)


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
        transform = None
        if self.augment is not None:
            def transform(i: int, camera: str, image: np.ndarray) -> np.ndarray:
                return augment_image(image, np.random.default_rng(seeds[i]), self.augment)
        inputs = frame_inputs(self.pi0, frames, self.camera_map, transform)
        a = frame_actions(self.pi0, frames)
        drawn = [self._noise_and_time(s) for s in seeds]
        noise = torch.from_numpy(np.stack([n for n, _ in drawn])).to(a.device)
        time = torch.tensor([t for _, t in drawn], dtype=torch.float32, device=a.device)
        return FlowBatch(inputs, a, noise, time, cfg.action_dim, len(frames) * (cfg.prefix_len + 1 + cfg.chunk_size))

    def loss(self, model: torch.nn.Module, batch: FlowBatch) -> tuple[torch.Tensor, int, int]:
        losses = model(inputs=batch.inputs, actions=batch.actions, noise=batch.noise, time=batch.time).losses
        real = losses[..., : batch.action_dim]
        return real.sum(), real.numel(), batch.n_sequence_tokens

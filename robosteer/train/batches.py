"""OpenVLA-style training examples and batches from demonstration frames.

A frame is a dict ``{"image": uint8 (H, W, 3), "instruction": str, "action": float (A,),
"proprio": float (P,) (only for models with a proprio input)}``, or any object with those
attributes (``robosteer.sim``'s ``Frame``). Each becomes one example as OpenVLA's
finetuning builds it:

    input_ids = prompt ids (BOS ... "Out:" + suffix token) + A action tokens + EOS
    labels    = IGNORE_INDEX over the prompt, then the action tokens and EOS

so the loss covers exactly the action tokens and the closing EOS (the model adds the
patch and proprio positions itself, labelled IGNORE_INDEX). Actions are normalised
with the model's own statistics (q01/q99 + mask) before tokenising; images are
optionally augmented (``augment.py``) with a per-example seed chosen by the caller,
then preprocessed by the model's processor. Batches are right-padded with the pad id.

Usage::

    builder = BatchBuilder(vla, augment=AugmentConfig())
    batch = builder.collate(frames[:8], seeds=[(0, step, i) for i in range(8)])
    loss = vla(**batch.model_inputs(), labels=batch.labels).loss
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..models.action_tokenizer import normalize
from ..models.vla import IGNORE_INDEX
from .augment import AugmentConfig, augment_image


@dataclass
class Batch:
    """Padded model inputs and labels for one (local) batch."""

    input_ids: torch.Tensor  # (B, L) long, right-padded with the pad id
    attention_mask: torch.Tensor  # (B, L) long, 0 on padding
    labels: torch.Tensor  # (B, L) long, IGNORE_INDEX on prompt and padding
    pixel_values: torch.Tensor  # (B, 3 * n_towers, S, S) float32
    proprio: torch.Tensor | None  # (B, P) float32 normalised, or None

    def to(self, device: torch.device | str) -> "Batch":
        """``batch.to("cuda")``: the same batch on another device."""
        move = (lambda t: None if t is None else t.to(device))
        return Batch(*(move(getattr(self, f)) for f in ("input_ids", "attention_mask", "labels", "pixel_values",
                                                          "proprio")))

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments of ``OpenVLA.forward`` (without labels)."""
        return {"input_ids": self.input_ids, "pixel_values": self.pixel_values,
                "attention_mask": self.attention_mask, "proprio": self.proprio}

    @property
    def n_loss_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class BatchBuilder:
    """Turns frames into padded batches for one model: ``BatchBuilder(vla).collate(frames)``."""

    def __init__(self, vla: Any, unnorm_key: str | None = None, augment: AugmentConfig | None = None) -> None:
        if vla.tokenizer is None:
            raise ValueError("building training examples needs the model's tokenizer (vla.tokenizer is None)")
        self.vla = vla
        self.unnorm_key = unnorm_key
        self.augment = augment
        self.action_stats = vla.norm_stats(unnorm_key)["action"]
        self.action_dim = len(self.action_stats["q01"])
        self.proprio_dim = int(vla.config.proprio_dim)
        self.eos_id = int(vla.tokenizer.eos_token_id)
        self.pad_id = int(vla.config.pad_token_id)
        self._prompts: dict[str, list[int]] = {}

    # --- one example ---------------------------------------------------------------------
    def prompt_ids(self, instruction: str) -> list[int]:
        """The prompt ids of an instruction (cached: demonstrations repeat a few instructions)."""
        if instruction not in self._prompts:
            self._prompts[instruction] = self.vla.tokenize(instruction)[0].tolist()
        return self._prompts[instruction]

    def tokens(self, frame: Mapping[str, Any], index: int = 0) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)`` of one frame, unpadded."""
        check_frame(frame, index, self.action_dim, self.proprio_dim)
        prompt = self.prompt_ids(field(frame, "instruction"))
        action = normalize(np.asarray(field(frame, "action"), dtype=np.float64)[None], self.action_stats)[0]  # (A,)
        target = self.vla.action_tokenizer.encode(action).tolist() + [self.eos_id]
        return prompt + target, [IGNORE_INDEX] * len(prompt) + target

    def length(self, frame: Mapping[str, Any]) -> int:
        """Token count of a frame's example (prompt + actions + EOS), without building it."""
        return len(self.prompt_ids(field(frame, "instruction"))) + self.action_dim + 1

    # --- a batch -------------------------------------------------------------------------
    def collate(self, frames: Sequence[Mapping[str, Any]], seeds: Sequence[Any] | None = None,
                pad_to: int | None = None) -> Batch:
        """``collate(frames, seeds=[(seed, step, slot), ...], pad_to=None)`` -> :class:`Batch`.

        ``seeds`` (one per frame; anything ``numpy.random.default_rng`` takes) drive the
        augmentation and are required when it is on. ``pad_to`` pads to a fixed length
        (processes of a multi-process run pad to the global batch's longest example).
        """
        if not frames:
            raise ValueError("collate needs at least one frame")
        if self.augment is not None and (seeds is None or len(seeds) != len(frames)):
            raise ValueError("augmentation is on: pass one seed per frame")
        pairs = [self.tokens(f, i) for i, f in enumerate(frames)]
        longest = max(len(ids) for ids, _ in pairs)
        width = longest if pad_to is None else pad_to
        if width < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest example ({longest} tokens)")
        input_ids = torch.full((len(frames), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(frames), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(frames), width), dtype=torch.long)
        for row, (ids, labs) in enumerate(pairs):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, :len(labs)] = torch.tensor(labs)
            attention[row, :len(ids)] = 1
        images = [np.asarray(field(f, "image")) for f in frames]
        if self.augment is not None:
            images = [augment_image(img, np.random.default_rng(seed), self.augment) for img, seed in zip(images, seeds)]
        pixel_values = self.vla.preprocess(images)
        proprio = None
        if self.proprio_dim:
            raw = np.stack([np.asarray(field(f, "proprio"), dtype=np.float64) for f in frames])  # (B, P)
            proprio = self.vla.normalize_proprio(raw, self.unnorm_key)
        return Batch(input_ids, attention, labels, pixel_values, proprio)


def field(frame: Any, key: str) -> Any:
    """``frame[key]`` for a dict, ``frame.key`` for an object (e.g. ``robosteer.data.frames.Frame``)."""
    return frame[key] if isinstance(frame, Mapping) else getattr(frame, key)


def _has(frame: Any, key: str) -> bool:
    return key in frame if isinstance(frame, Mapping) else getattr(frame, key, None) is not None


def check_frame(frame: Any, index: int, action_dim: int, proprio_dim: int) -> None:
    """Raise a clear ``ValueError`` unless ``frame`` is a usable training frame."""
    missing = [k for k in ("image", "instruction", "action") + (("proprio",) if proprio_dim else ()) if not _has(frame, k)]
    if missing:
        raise ValueError(f"frame {index} ({type(frame).__name__}) has no {missing}; a frame needs image, instruction, "
                         "action (and proprio for a model with a proprio input)")
    image = np.asarray(field(frame, "image"))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frame {index}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    instruction = field(frame, "instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"frame {index}: instruction must be a non-empty string")
    for key, dim in (("action", action_dim), ("proprio", proprio_dim)):
        if key == "proprio" and not dim:
            continue
        value = np.asarray(field(frame, key), dtype=np.float64)
        if value.shape != (dim,):
            raise ValueError(f"frame {index}: {key} must have shape ({dim},) to match the model's statistics, "
                             f"got {value.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"frame {index}: {key} has non-finite values")


def as_frames(data: Iterable[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """Indexable frames from any sequence or dataset (``len`` + ``[]``); other iterables are read into a list once."""
    frames = data if hasattr(data, "__len__") and hasattr(data, "__getitem__") else list(data)
    if len(frames) == 0:
        raise ValueError("no training frames: the dataset is empty")
    return frames

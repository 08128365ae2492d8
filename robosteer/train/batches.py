"""Training batches from demonstration frames: OpenVLA's training example plus augmentation.

The sequence itself (prompt, action tokens, EOS, labels, padding, pixels, proprio and the
positions of every token) is built by ``robosteer.models.sequence.SequenceBuilder`` with
``eos=True``, as OpenVLA's finetuning builds it:

    input_ids = prompt ids (BOS ... "Out:" + suffix token) + A action tokens + EOS
    labels    = IGNORE_INDEX over the prompt, then the action tokens and EOS

so the loss covers exactly the action tokens and the closing EOS. What training adds here:
images are optionally augmented (``augment.py``) with a per-example seed chosen by the
caller, and a batch can be padded to a fixed length (``pad_to``, for multi-process runs).
Frames are ``robosteer.data.frames.Frame`` objects or mappings with the same fields.

Usage::

    builder = BatchBuilder(vla, augment=AugmentConfig())
    batch = builder.collate(frames[:8], seeds=[(0, step, i) for i in range(8)])
    loss = vla(**batch.model_inputs(), labels=batch.labels).loss
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..models.sequence import ModelBatch, SequenceBuilder
from .augment import AugmentConfig, augment_image


class BatchBuilder:
    """Turns frames into padded training batches for one model: ``BatchBuilder(vla).collate(frames)``."""

    def __init__(self, vla: Any, unnorm_key: str | None = None, augment: AugmentConfig | None = None) -> None:
        self.sequence = SequenceBuilder(vla, unnorm_key, eos=True)  # checks the tokenizer and the statistics
        self.augment = augment

    def length(self, frame: Any) -> int:
        """Token count of a frame's example (prompt + actions + EOS), without building it."""
        return self.sequence.length(frame)

    def collate(self, frames: Sequence[Any], seeds: Sequence[Any] | None = None,
                pad_to: int | None = None) -> ModelBatch:
        """``collate(frames, seeds=[(seed, step, slot), ...], pad_to=None)`` -> ``ModelBatch``.

        ``seeds`` (one per frame; anything ``numpy.random.default_rng`` takes) drive the
        augmentation and are required when it is on. ``pad_to`` pads to a fixed length
        (processes of a multi-process run pad to the global batch's longest example).
        """
        if not frames:
            raise ValueError("collate needs at least one frame")
        if self.augment is not None and (seeds is None or len(seeds) != len(frames)):
            raise ValueError("augmentation is on: pass one seed per frame")
        transform = None
        if self.augment is not None:
            def transform(image: np.ndarray, row: int) -> np.ndarray:
                return augment_image(image, np.random.default_rng(seeds[row]), self.augment)
        return self.sequence.build(frames, pad_to=pad_to, image_transform=transform)


def as_frames(data: Iterable[Any]) -> Sequence[Any]:
    """Indexable frames from any sequence or dataset (``len`` + ``[]``); other iterables are read into a list once.

    Items stay as they are (datasets load images lazily); each is made a ``Frame`` where it is used.
    """
    frames = data if hasattr(data, "__len__") and hasattr(data, "__getitem__") else list(data)
    if len(frames) == 0:
        raise ValueError("no training frames: the dataset is empty")
    return frames


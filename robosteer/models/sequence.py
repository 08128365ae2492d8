"""How an OpenVLA input sequence is laid out: ids, labels, masks, pixels, proprio and positions.

The one place that turns frames (observation, instruction, action) into model inputs, used by
training (``train.batches``), the head recorders (``circuits.record``), the probes
(``circuits.probes``), the loss (``train.loss``) and the auxiliary targets. Each example is

    input_ids = prompt ids (BOS ... "Out:" + suffix token) + K*A action tokens [+ EOS]
    labels    = IGNORE_INDEX over the prompt, then the action tokens [and EOS]

right-padded with the pad id (``eos=True`` is OpenVLA's training example; recording and probes
use the prompt and the action tokens only). Actions are normalised with the model's statistics
(q01/q99 + mask) before tokenising; proprio with its q01/q99.

The model puts BOS, then ``n_prefix - 1`` image-patch (and proprio) positions, then the rest of
the text, so text token ``i >= 1`` sits at sequence position :func:`text_position` ``(i) = n_prefix - 1 + i``
and the logit that predicts a token sits one position before it (:meth:`ModelBatch.predicting`).
That rule is written here only.

Several images per observation (``n_views``) and K actions per step (``chunk``) are parameters
of the builder and default to the model's (``vla.config.n_views`` / ``action_chunk``); an OpenVLA
model takes one image and one action per step, so there both must be 1 (the builder says so
clearly otherwise). An OpenVLA-OFT model (``vla.config.parallel_decoding``) takes
``Frame.images`` (every view, in camera order) and always gets the stop token after its K*A
action positions (``eos`` is on): there the action positions are the slots whose input embeddings
the model zeroes, the head reads the positions one before them (:meth:`ModelBatch.predicting`),
and ``ModelBatch.actions`` holds the normalised continuous targets (B, K, A) of its L1 loss.

Usage::

    builder = SequenceBuilder(vla, eos=True)            # training examples; eos=False for recording
    batch = builder.build(frames)                       # frames: Frame objects or mappings
    logits = vla(**batch.model_inputs()).logits         # (B, S, V)
    next_action = logits[torch.arange(len(batch)), batch.predicting(batch.action_positions)[:, 0]]
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.frames import Frame, check_frame
from .action_heads import oft_normalize
from .action_tokenizer import normalize
from .vla import IGNORE_INDEX


def text_position(index: Any, n_prefix: int) -> Any:
    """Sequence position of text token ``index >= 1`` (an int or a tensor): ``n_prefix - 1 + index``.

    BOS (text token 0) is position 0; the ``n_prefix - 1`` patch/proprio positions follow it.
    """
    return index + (n_prefix - 1)


def predicting_text(x: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """The positions that predict ``input_ids[:, 1:]``: (B, S, ...) -> (B, L - 1, ...), aligned with ``labels[:, 1:]``.

    For logits, ``predicting_text(logits, n)[:, j - 1]`` is the prediction of text token ``j``.
    """
    return x[:, text_position(1, n_prefix) - 1 : -1]


@dataclass
class ModelBatch:
    """Padded model inputs, labels and token positions of a batch of frames."""

    input_ids: torch.Tensor  # (B, L) long, right-padded with the pad id
    attention_mask: torch.Tensor  # (B, L) long, 0 on padding
    labels: torch.Tensor  # (B, L) long, IGNORE_INDEX on prompt and padding
    pixel_values: torch.Tensor  # (B, 3 * n_towers, S, S) float32
    proprio: torch.Tensor | None  # (B, P) float32 normalised, or None
    prompt_lengths: torch.Tensor  # (B,) long: text tokens of each prompt (BOS ... suffix token)
    n_prefix: int  # positions before text token 1: BOS + patches (+ proprio), ``vla.n_prefix``
    n_actions: int  # action tokens per example: chunk * action_dim
    actions: torch.Tensor | None = None  # (B, K, A) float32 normalised targets (regression-head models only)

    def to(self, device: torch.device | str) -> "ModelBatch":
        """``batch.to("cuda")``: the same batch on another device."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return ModelBatch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments of ``OpenVLA.forward`` (without labels; no ``proprio`` for a model without one)."""
        inputs = {"input_ids": self.input_ids, "pixel_values": self.pixel_values, "attention_mask": self.attention_mask}
        if self.proprio is not None:
            inputs["proprio"] = self.proprio
        return inputs

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_loss_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    @property
    def n_sequence_tokens(self) -> int:
        """Positions the model runs over, padding excluded (text + patches + proprio, all rows)."""
        last = self.attention_mask.sum(dim=1) - 1  # (B,) index of each row's last text token
        return int((text_position(last, self.n_prefix) + 1).sum())

    # --- positions in the multimodal sequence ---------------------------------------------
    def text_position(self, index: Any) -> Any:
        """Sequence position of text token ``index >= 1`` (see :func:`text_position`)."""
        return text_position(index, self.n_prefix)

    @property
    def first_action(self) -> torch.Tensor:
        """(B,) sequence position of each example's first action token."""
        return self.text_position(self.prompt_lengths)

    @property
    def last_prompt(self) -> torch.Tensor:
        """(B,) sequence position of each prompt's last token (it predicts the first action token)."""
        return self.first_action - 1

    @property
    def action_positions(self) -> torch.Tensor:
        """(B, K*A) sequence positions of every action token."""
        return self.first_action[:, None] + torch.arange(self.n_actions, device=self.prompt_lengths.device)[None]

    @property
    def action_ids(self) -> torch.Tensor:
        """(B, K*A) the action token ids, read from ``input_ids``."""
        index = self.prompt_lengths[:, None] + torch.arange(self.n_actions, device=self.prompt_lengths.device)[None]
        return self.input_ids.gather(1, index.to(self.input_ids.device))

    @staticmethod
    def predicting(positions: torch.Tensor) -> torch.Tensor:
        """The sequence positions whose logits predict the tokens at ``positions`` (one before each)."""
        return positions - 1


class SequenceBuilder:
    """Frames -> :class:`ModelBatch` for one model: ``SequenceBuilder(vla, eos=True).build(frames)``."""

    def __init__(self, vla: Any, unnorm_key: str | None = None, *, eos: bool = False, n_views: int | None = None,
                 chunk: int | None = None) -> None:
        model_views, model_chunk = int(vla.config.n_views), int(vla.config.action_chunk)
        n_views = model_views if n_views is None else n_views
        chunk = model_chunk if chunk is None else chunk
        for name, value in (("n_views", n_views), ("chunk", chunk)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if n_views != model_views:
            if model_views == 1:
                raise ValueError(f"n_views={n_views}: this model takes one image per observation; "
                                 "multi-view inputs need a model family that supports them")
            raise ValueError(f"n_views={n_views}: this model takes {model_views} images per observation (config n_views)")
        if chunk != model_chunk:
            if model_chunk == 1:
                raise ValueError(f"chunk={chunk}: this model predicts one action per step; "
                                 "action chunks need a model family that supports them")
            raise ValueError(f"chunk={chunk}: this model predicts chunks of {model_chunk} actions (config action_chunk)")
        self.parallel = bool(vla.config.parallel_decoding)
        if vla.tokenizer is None:
            raise ValueError("building model inputs needs the model's tokenizer (vla.tokenizer is None)")
        self.vla = vla
        self.unnorm_key = unnorm_key
        self.eos = bool(eos) or self.parallel  # a parallel-decoding sequence always ends with the stop token
        self.n_views = n_views
        self.chunk = chunk
        self.action_stats = vla.norm_stats(unnorm_key)["action"]
        self.action_dim = len(self.action_stats["q01"])
        self.proprio_dim = int(vla.config.proprio_dim)
        self.n_actions = chunk * self.action_dim
        self.n_prefix = int(vla.n_prefix)  # BOS + the patches of the n_views images (+ proprio)
        self.eos_id = int(vla.tokenizer.eos_token_id)
        self.pad_id = int(vla.config.pad_token_id)
        self._prompts: dict[str, list[int]] = {}

    # --- one example ---------------------------------------------------------------------
    def prompt_ids(self, instruction: str) -> list[int]:
        """The prompt ids of an instruction (cached: demonstrations repeat a few instructions)."""
        if instruction not in self._prompts:
            self._prompts[instruction] = self.vla.tokenize(instruction)[0].tolist()
        return self._prompts[instruction]

    def action_ids(self, action: Any) -> list[int]:
        """The K*A token ids of a raw action ``(A,)`` (or ``(K, A)`` chunk), normalised with the model's statistics."""
        raw = np.asarray(action, dtype=np.float64).reshape(self.chunk, self.action_dim)  # (K, A)
        return self.vla.action_tokenizer.encode(normalize(raw, self.action_stats)).reshape(-1).tolist()

    def length(self, frame: Any) -> int:
        """Token count of a frame's example (prompt + K*A actions [+ EOS]), without building it."""
        return len(self.prompt_ids(Frame.coerce(frame).instruction)) + self.n_actions + int(self.eos)

    def frames(self, frames: Sequence[Any]) -> list[Frame]:
        """The frames as validated :class:`Frame` objects (mappings converted; errors name the frame)."""
        out = [Frame.coerce(f, f"frame {i}") for i, f in enumerate(frames)]
        for i, f in enumerate(out):
            check_frame(f, i, self.action_dim, self.proprio_dim, self.chunk)
        return out

    # --- a batch -------------------------------------------------------------------------
    def build(self, frames: Sequence[Any], *, pad_to: int | None = None,
              image_transform: Callable[[np.ndarray, int], np.ndarray] | None = None) -> ModelBatch:
        """``build(frames, pad_to=None, image_transform=None)`` -> :class:`ModelBatch`.

        ``pad_to`` pads to a fixed length (processes of a multi-process run pad to the global batch's
        longest example); ``image_transform(image, row)`` changes each image before preprocessing
        (training's augmentation).
        """
        if not frames:
            raise ValueError("building a batch needs at least one frame")
        frames = self.frames(frames)
        prompts = [self.prompt_ids(f.instruction) for f in frames]
        targets = [self.action_ids(f.action) + ([self.eos_id] if self.eos else []) for f in frames]
        longest = max(len(p) + len(t) for p, t in zip(prompts, targets))
        width = longest if pad_to is None else pad_to
        if width < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest example ({longest} tokens)")
        input_ids = torch.full((len(frames), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(frames), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(frames), width), dtype=torch.long)
        for row, (prompt, target) in enumerate(zip(prompts, targets)):
            n = len(prompt) + len(target)
            input_ids[row, :n] = torch.tensor(prompt + target)
            labels[row, len(prompt):n] = torch.tensor(target)
            attention[row, :n] = 1
        if self.n_views == 1:
            images = [np.asarray(f.image) for f in frames]  # one view per observation (n_views == 1)
            if image_transform is not None:
                images = [image_transform(image, row) for row, image in enumerate(images)]
        else:
            images = [self.views(f, row) for row, f in enumerate(frames)]
            if image_transform is not None:
                images = [[image_transform(view, row) for view in views] for row, views in enumerate(images)]
        pixel_values = self.vla.preprocess(images)
        proprio = None
        if self.proprio_dim:
            raw = np.stack([np.asarray(f.proprio, dtype=np.float64) for f in frames])  # (B, P)
            proprio = self.vla.normalize_proprio(raw, self.unnorm_key)
        prompt_lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        actions = None
        if self.parallel:
            actions = torch.stack([self.normalized_action(f.action) for f in frames])
        return ModelBatch(input_ids, attention, labels, pixel_values, proprio, prompt_lengths, self.n_prefix,
                          self.n_actions, actions)

    def views(self, frame: Frame, row: int) -> list[np.ndarray]:
        """Every camera view of a frame (``Frame.images``), checked against ``n_views``."""
        views = [np.asarray(v) for v in frame.images]
        if len(views) != self.n_views:
            raise ValueError(f"frame {row} has {len(views)} camera view(s); this model takes {self.n_views} (n_views)")
        return views

    def normalized_action(self, action: Any) -> torch.Tensor:
        """(K, A) float32: a raw action chunk normalised as the model normalises (the regression head's target)."""
        raw = np.asarray(action, dtype=np.float64).reshape(self.chunk, self.action_dim)
        kind = self.vla.config.normalization
        if kind == "openvla":
            values = normalize(raw, self.action_stats)
        else:
            values = oft_normalize(raw, self.action_stats, kind)
        return torch.as_tensor(values, dtype=torch.float32)

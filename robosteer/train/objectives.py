"""What one training step computes for a model family: its batches and its loss.

``train`` asks ``training_objective(vla, config)`` once and then, every step,
``batch = objective.collate(frames, seeds, pad_to)`` and
``loss_sum, n_loss, n_sequence = objective.loss(model, batch)``; the loop divides by the
global ``n_loss`` so that N processes compute what one process computes. The families:

- ``openvla`` (``TokenObjective``): OpenVLA's sequence (``batches.BatchBuilder``); cross-entropy
  (optionally label-smoothed) on the action tokens and EOS, or, for an OpenVLA-OFT regression
  head, L1 on the predicted chunk;
- ``pi0`` (``train.pi0_objective.FlowObjective``): flow matching on action chunks, as lerobot
  trains pi0.

Usage::

    objective = training_objective(vla, config)
    batch = objective.collate(frames, seeds=[(0, step, i) for i in range(8)]).to("cpu")
    loss_sum, n_loss, _ = objective.loss(vla, batch)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..models.action_heads import l1_action_loss
from .batches import BatchBuilder
from .config import TrainConfig, augment_config
from .loss import action_loss


class TokenObjective:
    """OpenVLA: action tokens (cross-entropy) or the OFT regression head (L1)."""

    def __init__(self, vla: Any, config: TrainConfig) -> None:
        self.vla = vla
        self.builder = BatchBuilder(vla, config.unnorm_key, augment_config(config))
        self.regression = vla.config.action_head != "tokens"
        self.label_smoothing = config.label_smoothing
        if self.regression and config.label_smoothing:
            raise ValueError(f"TrainConfig.label_smoothing={config.label_smoothing} smooths action-token targets; this "
                             f"model predicts continuous actions (action_head={vla.config.action_head!r}): set it to 0")

    def length(self, frame: Any) -> int:
        return self.builder.length(frame)

    def collate(self, frames: Sequence[Any], seeds: Sequence[Any], pad_to: int | None = None):
        return self.builder.collate(frames, seeds=seeds, pad_to=pad_to)

    def loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, int, int]:
        vla = self.vla
        if self.regression:  # continuous actions: L1 on the regression head's chunk (OFT), one value per action dim
            hidden = model(**batch.model_inputs(), output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
            return (l1_action_loss(vla, batch, hidden=hidden, reduction="sum"), batch.actions.numel(),
                    batch.n_sequence_tokens)
        logits = model(**batch.model_inputs()).logits  # (b, S, V)
        loss_sum = action_loss(logits, batch.labels, vla.n_prefix, vla.action_tokenizer, sigma=self.label_smoothing,
                               reduction="sum")
        return loss_sum, batch.n_loss_tokens, batch.n_sequence_tokens


def training_objective(vla: Any, config: TrainConfig):
    """The objective of ``vla``'s family (``vla.family.name``)."""
    family = getattr(getattr(vla, "family", None), "name", "openvla")
    if family == "pi0":
        from .pi0_objective import FlowObjective

        return FlowObjective(vla, config)
    return TokenObjective(vla, config)

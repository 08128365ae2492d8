"""Probe pairs (clean vs corrupted observations) and the metric the causal scorers share.

A probe is a list of pairs of frames that differ in one factor: the image (visual:
object colour/shape; environment: lighting/table), the instruction (linguistic:
paraphrase or another target), or the scene layout (physical/spatial). Both frames of
a pair carry the **clean** demonstrated action; the metric (``probe_metric``) is the log-probability
the policy gives the clean action's tokens, teacher-forced after the prompt, or, for a model with a
continuous-action head, minus the L1 distance of its predicted chunk from the clean one.

Positions: for the LLM, the causal scorers act on the *end* positions of the sequence
(the last prompt token and the action tokens), which are the same tokens in both
frames of a pair whatever the instruction, and are aligned from the end. Anything a
pair's difference does to those positions passes through attention heads, so patching
every LLM head there restores the clean metric exactly. Vision heads act on all of
their tower's positions (clean and corrupted images have the same patch grid).

Usage::

    probe = Probe("visual", pairs=[(clean_frame, corrupt_frame), ...])
    probe = Probe.from_frames("linguistic", clean_frames, corrupt_frames)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..data.frames import Frame
from .pi0 import flow_metric, is_pi0, probe_inputs

PROBE_KINDS = ("visual", "linguistic", "physical", "environment", "custom")


@dataclass(frozen=True)
class Probe:
    """Named pairs of frames ``(clean, corrupted)`` that differ in one factor.

    The sides are ``robosteer.data.frames.Frame`` objects; mappings with its fields are converted.
    """

    name: str
    pairs: tuple[tuple[Frame, Frame], ...]
    kind: str = "custom"

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError(f"probe {self.name!r} has no pairs")
        if self.kind not in PROBE_KINDS:
            raise ValueError(f"probe kind must be one of {PROBE_KINDS}, got {self.kind!r}")
        pairs = []
        for i, pair in enumerate(self.pairs):
            if len(pair) != 2:
                raise ValueError(f"probe {self.name!r} pair {i} must be (clean, corrupted)")
            pairs.append(tuple(Frame.coerce(side, f"probe {self.name!r} pair {i}") for side in pair))
        object.__setattr__(self, "pairs", tuple(pairs))

    @classmethod
    def from_frames(cls, name: str, clean: Sequence[Frame | Mapping[str, Any]],
                    corrupted: Sequence[Frame | Mapping[str, Any]], kind: str | None = None) -> "Probe":
        """Pair up two equally long lists; the corrupted frames get the clean frames' actions."""
        if len(clean) != len(corrupted):
            raise ValueError(f"probe {name!r}: {len(clean)} clean frames but {len(corrupted)} corrupted")
        clean = [Frame.coerce(c, f"probe {name!r} clean frame {i}") for i, c in enumerate(clean)]
        corrupted = [Frame.coerce(x, f"probe {name!r} corrupted frame {i}") for i, x in enumerate(corrupted)]
        pairs = tuple((c, dataclasses.replace(x, action=c.action)) for c, x in zip(clean, corrupted))
        return cls(name, pairs, kind or (name if name in PROBE_KINDS else "custom"))

    def __len__(self) -> int:
        return len(self.pairs)


def build_inputs(vla, frames: Sequence[Frame | Mapping[str, Any]], unnorm_key: str | None = None) -> dict[str, Any]:
    """Teacher-forced inputs plus, per example, the end positions ``(B, 1 + K*A)`` and the targets.

    ``end`` is the last prompt position then every action position (``models.sequence``). The targets are
    the clean action's token ids ``(B, A)`` for a token model, or its normalised continuous chunk
    ``(B, K, A)`` for a regression-head model (whose inputs then ask for the hidden states). pi0
    (``circuits.pi0.probe_inputs``): one velocity call, ``end`` None (its heads act at every position), and
    the clean actions in model space ``(B, rows, max_action_dim)``.
    """
    from ..models.sequence import SequenceBuilder

    if is_pi0(vla):
        return probe_inputs(vla, frames)
    seq = SequenceBuilder(vla, unnorm_key).build(frames)  # prompt + action tokens (or slots + stop token), no EOS
    end = torch.cat([seq.last_prompt[:, None], seq.action_positions], dim=1)  # last prompt token .. last action token
    if vla.config.parallel_decoding:
        return {"inputs": {**seq.model_inputs(), "output_hidden_states": True}, "end": end, "targets": seq.actions}
    return {"inputs": seq.model_inputs(), "end": end, "targets": seq.action_ids}


def probe_metric(vla, out, end: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The causal scorers' metric per example ``(B,)``, higher when the clean action is more likely:

    - token actions: :func:`action_logprob`, the log-probability of the clean action's tokens;
    - continuous actions (a regression head): minus the L1 distance between the predicted normalised chunk
      and the clean one, summed over the chunk's values (the head reads the hidden states at ``end[:, :-1]``,
      one before each action slot, as it does when predicting);
    - pi0 (flow matching): minus the L1 distance of the one-step estimate of the clean chunk from the clean
      actions (``circuits.pi0.flow_metric``).
    """
    if is_pi0(vla):
        return flow_metric(vla, out, targets)
    if not vla.config.parallel_decoding:
        return action_logprob(out.logits, end, targets)
    from ..models.action_heads import chunk_at

    predicted = chunk_at(vla, out.hidden_states[-1], end[:, :-1])  # (B, K, A), from the final-norm hidden states
    return -(predicted.float() - targets.to(predicted.device).float()).abs().sum(dim=(1, 2))


def action_logprob(logits: torch.Tensor, end: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over action tokens of log p(target token), per example: ``(B,)``.

    ``end[:, j]`` predicts ``targets[:, j]`` (the last prompt token predicts the first action token).
    """
    rows = torch.arange(logits.shape[0])[:, None]
    pred = logits[rows, end[:, :-1]].float().log_softmax(-1)  # (B, A, V)
    return pred.gather(-1, targets[..., None]).squeeze(-1).sum(-1)

"""Probe pairs (clean vs corrupted observations) and the metric the causal scorers share.

A probe is a list of pairs of frames that differ in one factor: the image (visual:
object colour/shape; environment: lighting/table), the instruction (linguistic:
paraphrase or another target), or the scene layout (physical/spatial). Both frames of
a pair carry the **clean** demonstrated action; the metric is the log-probability the
policy gives the clean action's tokens, teacher-forced after the prompt.

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
    """Teacher-forced inputs plus, per example, the end positions ``(B, 1 + A)`` and the action target ids ``(B, A)``.

    ``end`` is the last prompt position then every action token's position (``models.sequence``).
    """
    from ..models.sequence import SequenceBuilder

    seq = SequenceBuilder(vla, unnorm_key).build(frames)  # prompt + action tokens, no EOS
    end = torch.cat([seq.last_prompt[:, None], seq.action_positions], dim=1)  # last prompt token .. last action token
    return {"inputs": seq.model_inputs(), "end": end, "targets": seq.action_ids}


def action_logprob(logits: torch.Tensor, end: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over action tokens of log p(target token), per example: ``(B,)``.

    ``end[:, j]`` predicts ``targets[:, j]`` (the last prompt token predicts the first action token).
    """
    rows = torch.arange(logits.shape[0])[:, None]
    pred = logits[rows, end[:, :-1]].float().log_softmax(-1)  # (B, A, V)
    return pred.gather(-1, targets[..., None]).squeeze(-1).sum(-1)

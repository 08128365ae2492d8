"""Auxiliary state targets for pretraining: make the policy *say* where things are.

Behaviour cloning alone gives a weak signal about object positions: the expert's moves
saturate at +-1 until the gripper is within a few centimetres of its goal, so most action
tokens carry only a direction. ``StateTargets`` adds a dense one: a linear read-out of the
LLM's final hidden state, at every position that predicts an action token, regresses where
the named object and its goal are relative to the gripper (the privileged ``state`` the
demonstrations record, ``robosteer.data.schema.STATE_NAMES``; decimetres, mean squared error).

It is used only while pretraining. The read-out lives in a submodule of the policy during
training (so it trains, checkpoints and resumes with everything else) and is removed before
the final policy is saved: the shipped checkpoint is a plain OpenVLA-architecture model
whose inputs are still only the image, the instruction and the proprio vector
(``FullWithoutReadout``: the ``full`` strategy that saves the policy without it).

Usage::

    with StateTargets.attached(vla, weight=1.0) as aux:
        train(vla, frames, FullWithoutReadout(), config, auxiliary=aux)
    StateTargets.detach(vla)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..data.frames import Frame
from ..models.sequence import predicting_text
from ..models.vla import IGNORE_INDEX
from .strategies.base import FullStrategy

HEAD = "aux_state_head"  # submodule name of the read-out while training
STATE_DIM = 6  # target xyz, goal xyz
SCALE = 10.0  # metres -> decimetres, so targets are O(1)


class StateTargets:
    """``aux(frames, batch)`` -> weighted MSE of the state read-out; see the module docstring."""

    def __init__(self, vla: nn.Module, weight: float = 1.0, seed: int = 0) -> None:
        if weight <= 0:
            raise ValueError(f"the auxiliary weight must be positive, got {weight}")
        self.vla, self.weight = vla, float(weight)
        self._hidden: torch.Tensor | None = None
        if not hasattr(vla, HEAD):  # initialised from its own seed, so runs (and resumed runs) start identical
            head = nn.Linear(vla.language_model.config.hidden_size, STATE_DIM)
            with torch.no_grad():
                head.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
                head.bias.zero_()
            vla.add_module(HEAD, head.to(device=vla.device))

    @classmethod
    @contextmanager
    def attached(cls, vla: nn.Module, weight: float = 1.0, seed: int = 0) -> Iterator["StateTargets"]:
        """Add the read-out (if absent) and capture the final hidden states while the block runs."""
        aux = cls(vla, weight, seed)
        handle = vla.language_model.model.norm.register_forward_hook(aux._capture)
        try:
            yield aux
        finally:
            handle.remove()
            aux._hidden = None

    @staticmethod
    def detach(vla: nn.Module) -> None:
        """Remove the read-out, leaving a plain policy."""
        if hasattr(vla, HEAD):
            delattr(vla, HEAD)

    def _capture(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._hidden = output

    def targets(self, frames: Sequence[Any]) -> torch.Tensor:
        """(B, 6) object and goal positions relative to the gripper, in decimetres."""
        rows = []
        for i, frame in enumerate(frames):
            frame = Frame.coerce(frame, f"frame {i}")
            state = frame.state
            if state is None:
                raise ValueError(f"frame {i} has no privileged 'state': auxiliary state targets need demonstrations "
                                 "recorded by this version of `robosteer collect` (or set aux_weight=0)")
            eef = np.asarray(frame.proprio, dtype=np.float64)[:3]
            rows.append((np.asarray(state, dtype=np.float64) - np.tile(eef, 2)) * SCALE)
        return torch.tensor(np.stack(rows), dtype=torch.float32)

    def __call__(self, frames: Sequence[Any], batch: Any) -> torch.Tensor:
        if self._hidden is None:
            raise RuntimeError("StateTargets saw no forward pass: use it inside `with StateTargets.attached(vla)`")
        hidden = predicting_text(self._hidden, self.vla.n_prefix)  # (B, L-1, D): the positions that predict text tokens
        keep = batch.labels[:, 1:] != IGNORE_INDEX  # (B, L-1): action tokens and EOS
        pred = getattr(self.vla, HEAD)(hidden.float())  # (B, L-1, 6)
        target = self.targets(frames).to(pred.device)[:, None, :]  # (B, 1, 6)
        err = ((pred - target) ** 2).mean(dim=-1)  # (B, L-1)
        self._hidden = None
        return self.weight * err[keep].mean()


class FullWithoutReadout(FullStrategy):
    """``full``, but the final policy is saved without the auxiliary read-out (a training device only)."""

    def save(self, vla, directory):
        StateTargets.detach(vla)
        return super().save(vla, directory)

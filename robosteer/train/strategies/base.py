"""What a training strategy is: the object that decides which parameters of the policy train.

The loop (``train/loop.py``) calls ``strategy.prepare(vla)`` once on the base model,
then optimises exactly the parameters that have ``requires_grad`` afterwards (nothing
else enters the optimizer, so AdamW's weight decay cannot touch a frozen weight), and
once every step has run calls ``strategy.save(vla, out_dir / "final")`` (on the main
process) to write the result in the strategy's own format. ``describe()`` is the JSON
recorded in training checkpoints, so that a resumed run can check it is continuing the
same kind of training.

Usage::

    strategy = make_strategy("heads", mask=mask)
    strategy.prepare(vla)
    params = trainable_parameters(vla)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import nn


class Strategy(Protocol):
    """The interface every strategy implements."""

    name: str

    def prepare(self, vla: nn.Module) -> None:
        """Freeze, inject or attach so that exactly the parameters to train have ``requires_grad``."""

    def save(self, vla: nn.Module, directory: str | Path) -> Path:
        """Write the trained result (adapter or full model) to ``directory``, atomically."""

    def describe(self) -> dict[str, Any]:
        """JSON-able settings (name first), stored in training checkpoints and compared on resume."""


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``trainable_parameters(vla)`` -> ``[(name, parameter)]`` of every parameter with ``requires_grad``."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def count_trainable(model: nn.Module) -> int:
    """Number of trainable scalars (``numel`` summed over parameters with ``requires_grad``)."""
    return sum(p.numel() for _, p in trainable_parameters(model))


def freeze(model: nn.Module) -> None:
    """Set ``requires_grad=False`` on every parameter."""
    for p in model.parameters():
        p.requires_grad_(False)


class FullStrategy:
    """``full``: every parameter trains (finetuning everything, or pretraining from scratch)."""

    name = "full"

    def prepare(self, vla: nn.Module) -> None:
        for p in vla.parameters():
            p.requires_grad_(True)

    def save(self, vla: nn.Module, directory: str | Path) -> Path:
        """The whole model, in OpenVLA's checkpoint format (``vla.save_pretrained``)."""
        return vla.save_pretrained(directory)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

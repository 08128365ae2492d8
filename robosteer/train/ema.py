"""An exponential moving average of the trainable weights (``TrainConfig.ema_decay``).

After every optimizer step ``average = d * average + (1 - d) * weight``, with the decay warmed up
as ``d_t = min(d, (1 + t) / (10 + t))`` so the first steps do not drag the average towards the
random initialisation (the rule of TensorFlow's and timm's ``ModelEma``). The average lives beside
the training weights: checkpoints hold both (``ema.safetensors``), so a resumed run is bit-exact,
and the final policy or adapter is saved with the averaged weights swapped in.

Usage::

    ema = WeightAverage(trainable_parameters(vla), decay=0.999)
    ... optimizer.step(); ema.update(step)
    with ema.applied():
        strategy.save(vla, out / "final")
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn


def warmed_decay(decay: float, step: int) -> float:
    """The decay used after optimizer step ``step`` (1-based): ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """The running average of named parameters; ``state()`` / ``load()`` for checkpoints."""

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.params = dict(named_parameters)
        if not self.params:
            raise ValueError("the weight average needs at least one parameter")
        self.average = {name: p.detach().clone().float() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the current weights in, after optimizer step ``step`` (1-based)."""
        d = warmed_decay(self.decay, step)
        for name, p in self.params.items():
            self.average[name].mul_(d).add_(p.detach().float(), alpha=1.0 - d)

    def state(self) -> dict[str, torch.Tensor]:
        """The average, keyed by parameter name, on CPU (for ``ema.safetensors``)."""
        return {name: t.detach().cpu().contiguous() for name, t in self.average.items()}

    def load(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Restore ``state()``; ``source`` names the file in errors."""
        if sorted(tensors) != sorted(self.average):
            missing = sorted(set(self.average) - set(tensors))
            extra = sorted(set(tensors) - set(self.average))
            raise ValueError(f"{source}: the weight average holds other parameters than this run "
                             f"(missing {missing[:4]}, unexpected {extra[:4]})")
        for name, t in tensors.items():
            self.average[name].copy_(t.to(self.average[name].device))

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the parameters hold the average; the training weights come back after."""
        saved = {name: p.detach().clone() for name, p in self.params.items()}
        try:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(self.average[name].to(p.dtype))
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(saved[name])

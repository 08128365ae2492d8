"""Training strategies: which parameters of the policy train.

- ``full``: every parameter (also from-scratch pretraining);
- ``heads``: per-head deltas on the selected heads' query and output slices (``kv=True`` adds key/value);
- ``random-heads``: ``heads`` on a random mask of the same size per tower (the control);
- ``lora``: peft LoRA with OpenVLA's defaults.

Usage::

    strategy = make_strategy("heads", mask=mask)
    strategy = make_strategy("lora", lora=LoraSettings(r=32))
"""

from __future__ import annotations

from typing import Any

from .base import FullStrategy, Strategy, count_trainable, freeze, trainable_parameters
from .heads import HeadsStrategy, RandomHeadsStrategy
from .lora import LoraSettings, LoraStrategy, all_linear_targets

METHODS: tuple[str, ...] = ("heads", "lora", "full", "random-heads")


def make_strategy(method: str, mask: Any = None, kv: bool = False, lora: LoraSettings | None = None,
                  seed: int = 0) -> Strategy:
    """``make_strategy("heads", mask=mask)`` -> a strategy object (``mask`` is needed by the head methods)."""
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; choose one of {', '.join(METHODS)}")
    if method in ("heads", "random-heads"):
        if mask is None:
            raise ValueError(f"method {method!r} needs a head mask (--mask heads.json)")
        return HeadsStrategy(mask, kv=kv) if method == "heads" else RandomHeadsStrategy(mask, seed=seed, kv=kv)
    if method == "lora":
        return LoraStrategy(lora or LoraSettings())
    return FullStrategy()


__all__ = ["METHODS", "FullStrategy", "HeadsStrategy", "LoraSettings", "LoraStrategy", "RandomHeadsStrategy",
           "Strategy", "all_linear_targets", "count_trainable", "freeze", "make_strategy", "trainable_parameters"]

"""Training strategies: which parameters of the policy train; ``METHODS`` is the one registry of their names.

- ``full``: every parameter (also from-scratch pretraining);
- ``heads``: per-head deltas on the selected heads' query and output slices (``kv=True`` adds key/value);
- ``random-heads``: ``heads`` on a random mask of the same size per tower (the control);
- ``lora``: peft LoRA with OpenVLA's defaults (``LoraSettings``, in the torch-free ``lora_config.py``).

Importing this package is cheap (the registry and ``LoraSettings`` need no torch, so command lines
list them for free); the strategies load on first use of a name.

Usage::

    strategy = make_strategy("heads", mask=mask)
    strategy = make_strategy("lora", lora=LoraSettings(r=32))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robosteer.lazy import lazy_exports

from .lora_config import LoraSettings

if TYPE_CHECKING:
    from .base import Strategy

METHODS: tuple[str, ...] = ("heads", "lora", "full", "random-heads")  # every finetuning method, by name
HEAD_METHODS: tuple[str, ...] = ("heads", "random-heads")  # the methods that train the heads of a mask


def make_strategy(method: str, mask: Any = None, kv: bool = False, lora: LoraSettings | None = None,
                  seed: int = 0) -> Strategy:
    """``make_strategy("heads", mask=mask)`` -> a strategy object (``mask`` is needed by the head methods)."""
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; choose one of {', '.join(METHODS)}")
    if method in HEAD_METHODS:
        from .heads import HeadsStrategy, RandomHeadsStrategy

        if mask is None:
            raise ValueError(f"method {method!r} needs a head mask (--mask heads.json)")
        return HeadsStrategy(mask, kv=kv) if method == "heads" else RandomHeadsStrategy(mask, seed=seed, kv=kv)
    if method == "lora":
        from .lora import LoraStrategy

        return LoraStrategy(lora or LoraSettings())
    from .base import FullStrategy

    return FullStrategy()


_EXPORTS = {
    "FullStrategy": "robosteer.train.strategies.base",
    "Strategy": "robosteer.train.strategies.base",
    "count_trainable": "robosteer.train.strategies.base",
    "freeze": "robosteer.train.strategies.base",
    "trainable_parameters": "robosteer.train.strategies.base",
    "HeadsStrategy": "robosteer.train.strategies.heads",
    "RandomHeadsStrategy": "robosteer.train.strategies.heads",
    "LoraStrategy": "robosteer.train.strategies.lora",
    "all_linear_targets": "robosteer.train.strategies.lora",
}

__all__ = ["HEAD_METHODS", "METHODS", "FullStrategy", "HeadsStrategy", "LoraSettings", "LoraStrategy",
           "RandomHeadsStrategy", "Strategy", "all_linear_targets", "count_trainable", "freeze", "make_strategy",
           "trainable_parameters"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

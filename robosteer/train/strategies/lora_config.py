"""``LoraSettings``: the LoRA strategy's own settings (OpenVLA's defaults), apart from the torch code that uses them.

Kept free of torch so that a command line can declare ``--lora-r`` and friends from these
fields (``robosteer.config_cli``) without loading torch. ``strategies/lora.py`` applies them.

Usage::

    settings = LoraSettings(r=8, alpha=4)
    settings.to_dict()   # {"r": 8, "alpha": 4, "dropout": 0.0, "target_modules": "all-linear", "init": "gaussian"}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_LINEAR = "all-linear"
INITS = (True, False, "gaussian", "pissa", "olora", "loftq", "eva", "orthogonal")  # peft's init_lora_weights values


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (OpenVLA's defaults)."""

    r: int = field(default=32, metadata={"help": "LoRA rank of each update"})
    alpha: float = field(default=16, metadata={"help": "peft's lora_alpha; the update is scaled by alpha / r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    target_modules: str | tuple[str, ...] = field(default=ALL_LINEAR, metadata={
        "help": "'all-linear' or module paths / suffixes for peft"})
    init: str | bool = field(default="gaussian", metadata={"help": "peft's init_lora_weights"})

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoRA rank r must be a positive int, got {self.r!r}")
        if self.alpha <= 0:
            raise ValueError(f"lora alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.target_modules, str):
            if self.target_modules != ALL_LINEAR:
                raise ValueError(f"target_modules must be {ALL_LINEAR!r} or a tuple of module names, "
                                 f"got {self.target_modules!r}")
        elif not self.target_modules:
            raise ValueError("target_modules is empty")
        if self.init not in INITS:
            raise ValueError(f"unknown init_lora_weights {self.init!r}")

    def to_dict(self) -> dict[str, Any]:
        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout, "target_modules": targets, "init": self.init}

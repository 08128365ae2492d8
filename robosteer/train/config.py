"""``TrainConfig``: every setting of a training run, validated once; and the learning-rate schedule.

Defaults follow OpenVLA's finetuning recipe (AdamW with torch's defaults, constant lr
5e-4, batch 16, gradient clipping 1.0, image augmentation on). The Robotic Steering
recipe is ``schedule="cosine", warmup_steps=..., betas=(0.9, 0.95), batch_size=32``.

Usage::

    cfg = TrainConfig(out_dir="runs/heads", steps=3000, batch_size=32, schedule="cosine", warmup_steps=100)
    factor = lr_factor(cfg, step=10)   # multiplies cfg.lr
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..config_cli import field_default
from .augment_config import AugmentConfig

SCHEDULES: tuple[str, ...] = ("constant", "cosine")
MIXED_PRECISION: tuple[str, ...] = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (pretraining or finetuning); each field's help is also its command-line help."""

    out_dir: str = field(metadata={"help": "output folder: checkpoints, metrics and the final adapter or model"})
    steps: int = field(default=3000, metadata={"help": "optimizer steps in the whole run (the schedule spans these)"})
    batch_size: int = field(default=16, metadata={"help": "global batch: examples per step summed over all processes"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    schedule: str = field(default="constant", metadata={
        "help": "learning-rate schedule; cosine decays to min_lr_ratio * lr at the last step", "choices": SCHEDULES})
    warmup_steps: int = field(default=0, metadata={
        "help": "linear warm-up from 0 over this many steps (both schedules)"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "floor of the cosine schedule, as a fraction of lr"})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas", "metavar": ("B1", "B2")})
    weight_decay: float = field(default=0.01, metadata={
        "help": "AdamW decoupled weight decay (only trainable parameters are in the optimizer)"})
    eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    grad_clip: float | None = field(default=1.0, metadata={"help": "max global gradient norm; none disables clipping"})
    seed: int = field(default=0, metadata={
        "help": "seeds initialisation (e.g. LoRA), the data order and the augmentation"})
    log_every: int = field(default=10, metadata={
        "help": "write a metrics row every this many steps (and at the last step)"})
    ckpt_every: int = field(default=500, metadata={
        "help": "write a checkpoint every this many steps (and at the last step)"})
    keep_checkpoints: int = field(default=1, metadata={"help": "how many of the newest checkpoints to keep"})
    augment: bool = field(default=True, metadata={"help": "OpenVLA's image augmentation (random crop, colour jitter)"})
    # the three augmentation ranges a run sets: defaults and checks are AugmentConfig's (one definition)
    augment_shift: int = field(default=field_default(AugmentConfig, "shift"), metadata={
        "help": "random translation of up to this many pixels before the crop (0: off; not in OpenVLA)"})
    augment_crop_scale: float = field(default=field_default(AugmentConfig, "crop_scale"), metadata={
        "help": "area kept by the random crop (1.0: no crop, keeps object positions exact)"})
    augment_hue: float = field(default=field_default(AugmentConfig, "hue"), metadata={
        "help": "hue shift range in turns (0: keep colours, e.g. when colour names the target)"})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Gaussian smoothing over neighbouring action bins, sigma in bins (0: off)"})
    ema_decay: float = field(default=0.0, metadata={
        "help": "exponential moving average of the trainable weights, saved as the final output (0: off; e.g. 0.999)"})
    unnorm_key: str | None = field(default=None, metadata={
        "help": "which of the model's dataset statistics normalise the actions"})
    mixed_precision: str = field(default="no", metadata={"help": "accelerate's mixed precision",
                                                         "choices": MIXED_PRECISION})
    resume: bool = field(default=True, metadata={
        "help": "resuming from the newest checkpoint in out_dir, if there is one"})
    progress: bool = field(default=True, metadata={"help": "the tqdm progress bar"})

    def __post_init__(self) -> None:
        if not self.out_dir:
            raise ValueError("TrainConfig.out_dir is required")
        for name in ("steps", "batch_size", "log_every", "ckpt_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"TrainConfig.warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0 or self.eps <= 0:
            raise ValueError(f"TrainConfig needs weight_decay >= 0 and eps > 0, got {self.weight_decay}, {self.eps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip!r}")
        if not isinstance(self.keep_checkpoints, int) or self.keep_checkpoints < 1:
            raise ValueError(f"TrainConfig.keep_checkpoints must be >= 1, got {self.keep_checkpoints!r}")
        try:  # AugmentConfig checks the ranges; its errors start with its field, which is ours without "augment_"
            self.augmentation()
        except ValueError as err:
            raise ValueError(f"TrainConfig.augment_{err}") from None
        if self.label_smoothing < 0:
            raise ValueError(f"TrainConfig.label_smoothing must be >= 0, got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1) (0: off), got {self.ema_decay!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"TrainConfig.mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def augmentation(self) -> AugmentConfig:
        """The ``AugmentConfig`` of this run's ``augment_shift`` / ``augment_crop_scale`` / ``augment_hue``."""
        return AugmentConfig(shift=self.augment_shift, crop_scale=self.augment_crop_scale, hue=self.augment_hue)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def augment_config(cfg: TrainConfig) -> AugmentConfig | None:
    """The image augmentation of a run, or None when it is off."""
    return cfg.augmentation() if cfg.augment else None


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Learning-rate multiplier for the ``step``-th optimizer step (0-based): warm-up, then constant or cosine."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps - 1)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

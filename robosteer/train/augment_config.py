"""``AugmentConfig``: the ranges of the training image augmentation, validated once (no numpy, no Pillow).

Kept apart from ``augment.py`` (which does the pixel work) so that ``TrainConfig`` can take its
augmentation defaults and checks from here while ``robosteer --help`` stays free of numpy, as
``strategies/lora_config.py`` does for LoRA.

Usage::

    cfg = AugmentConfig(crop_scale=1.0, hue=0.0)   # no crop, colours kept
    check_shift(2, "TrainConfig.augment_shift")
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation ranges (OpenVLA's finetuning defaults).

    Every error names the field first (``"crop_scale must be ..."``): ``TrainConfig`` prefixes it with
    its own field's name (``TrainConfig.augment_crop_scale``).
    """

    shift: int = 0  # random translation of up to this many pixels in x and y, border repeated (0 = off)
    crop_scale: float = 0.9  # fraction of the image area kept by the random crop (1.0 = no crop)
    crop_ratio: float = 1.0  # aspect ratio of the crop, relative to the image's own
    brightness: float = 0.2  # additive delta drawn from [-b, b], on [0, 1] pixels
    contrast: tuple[float, float] = (0.8, 1.2)  # factor range about the per-channel mean
    saturation: tuple[float, float] = (0.8, 1.2)  # factor range on HSV saturation
    hue: float = 0.05  # shift drawn from [-h, h], in turns of the colour wheel

    def __post_init__(self) -> None:
        check_shift(self.shift)
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.crop_ratio <= 0:
            raise ValueError(f"crop_ratio must be positive, got {self.crop_ratio}")
        if not 0.0 <= self.brightness <= 1.0:
            raise ValueError(f"brightness must be in [0, 1], got {self.brightness}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        for name in ("contrast", "saturation"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}")


def check_shift(shift, name: str = "shift") -> None:
    """The random shift is a whole number of pixels >= 0; ``name`` is how the caller's setting is called."""
    if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0:
        raise ValueError(f"{name} must be an int >= 0 (pixels), got {shift!r}")

"""OpenVLA's finetuning image augmentation, written natively (numpy + Pillow), seeded.

OpenVLA (``prismatic/vla/datasets/rlds``) augments each training frame, in this order:
random resized crop (scale 0.9, ratio 1) resized back to the original size, random
brightness (+-0.2, additive), contrast (x0.8-1.2 about the per-channel mean), saturation
(x0.8-1.2) and hue (+-0.05 of a turn). The same operations are implemented here on a
uint8 (H, W, 3) frame with a caller-supplied ``numpy.random.Generator``, so a given seed
always gives the same pixels and no torchvision/TensorFlow is needed. One addition that
OpenVLA does not have, off by default: a random shift of up to ``shift`` pixels (the image
padded by repeating its border, then cropped back to its size at a random offset; DrQ's
augmentation), applied first. Unlike the resized crop it keeps the scale, so an unshifted
evaluation frame is the centre of what training saw. The ranges are ``AugmentConfig``
(``augment_config.py``, torch- and numpy-free, so ``TrainConfig`` takes its defaults from it).

Usage::

    out = augment_image(image, np.random.default_rng(seed), AugmentConfig())
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .augment_config import AugmentConfig


def augment_image(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """``augment_image(img, rng)`` -> a new uint8 (H, W, 3) frame; ``rng`` decides every random draw."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"augment_image expects a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if cfg.shift:
        image = random_shift(image, rng, cfg.shift)
    x = random_resized_crop(image, rng, cfg.crop_scale, cfg.crop_ratio).astype(np.float32) / 255.0  # (H, W, 3)
    x = np.clip(x + rng.uniform(-cfg.brightness, cfg.brightness), 0.0, 1.0)
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = np.clip((x - mean) * rng.uniform(*cfg.contrast) + mean, 0.0, 1.0)
    hsv = rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*cfg.saturation), 0.0, 1.0)
    hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-cfg.hue, cfg.hue), 1.0)
    x = hsv_to_rgb(hsv)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def random_shift(image: np.ndarray, rng: np.random.Generator, shift: int) -> np.ndarray:
    """Translate by a random whole-pixel offset in [-shift, shift] per axis; uncovered pixels repeat the border."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
    top, left = (int(v) for v in rng.integers(0, 2 * shift + 1, size=2))
    return padded[top:top + h, left:left + w].copy()


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, scale: float, ratio: float) -> np.ndarray:
    """Crop a box of ``scale`` of the area (side fractions sqrt(scale/ratio), sqrt(scale*ratio)) and resize back."""
    h, w = image.shape[:2]
    ch = min(h, max(1, round(h * math.sqrt(scale / ratio))))
    cw = min(w, max(1, round(w * math.sqrt(scale * ratio))))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    crop = image[top:top + ch, left:left + cw]
    if (ch, cw) == (h, w):
        return crop.copy()
    return np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BILINEAR))


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 3) HSV in [0, 1] (hue in turns)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    c = v - rgb.min(axis=-1)
    s = np.where(v > 0, c / np.where(v > 0, v, 1.0), 0.0)
    safe_c = np.where(c > 0, c, 1.0)
    h = np.where(v == r, (g - b) / safe_c, np.where(v == g, 2.0 + (b - r) / safe_c, 4.0 + (r - g) / safe_c))
    h = np.where(c > 0, np.mod(h / 6.0, 1.0), 0.0)
    return np.stack([h, s, v], axis=-1).astype(rgb.dtype)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    k = np.mod(np.array([5.0, 3.0, 1.0], dtype=hsv.dtype) + h[..., None] * 6.0, 6.0)  # (..., 3)
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)

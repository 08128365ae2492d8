"""Image preprocessing identical to OpenVLA's ``PrismaticImageProcessor``.

Per tower: resize to the tower's size ("resize-naive": Pillow bicubic, antialiased,
aspect ratio not kept), centre-crop, scale to [0, 1] in float32, normalise with the
tower's mean/std; then stack the towers' 3-channel results on the channel axis
(DINO channels 0-2, SigLIP 3-5).

Usage::

    proc = ImageProcessor.from_config(cfg)
    pixel_values = proc(images)  # (B, 3 * n_towers, S, S) float32
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .config import VLAConfig


@dataclass(frozen=True)
class ImageProcessor:
    """Turns RGB images into ``pixel_values``; one (size, mean, std) per tower."""

    sizes: tuple[int, ...]
    means: tuple[tuple[float, float, float], ...]
    stds: tuple[tuple[float, float, float], ...]
    min_size: int = 1  # smallest accepted image side: one patch of the towers (a smaller image holds no patch)

    def __post_init__(self) -> None:
        if not (len(self.sizes) == len(self.means) == len(self.stds)) or not self.sizes:
            raise ValueError("ImageProcessor needs one size, mean and std per tower")

    @classmethod
    def from_config(cls, cfg: VLAConfig) -> "ImageProcessor":
        return cls(tuple(t.image_size for t in cfg.towers), tuple(t.mean for t in cfg.towers),
                   tuple(t.std for t in cfg.towers), min_size=max(t.patch_size for t in cfg.towers))

    def __call__(self, images: Any) -> torch.Tensor:
        """``proc(image_or_list)`` -> ``(B, 3 * n_towers, S, S)`` float32."""
        batch = [_to_pil(img, i) for i, img in enumerate(_as_list(images))]
        for i, img in enumerate(batch):
            if min(img.size) < self.min_size:
                width, height = img.size
                raise ValueError(f"image {i}: {height}x{width} pixels is smaller than one {self.min_size}x{self.min_size} "
                                 f"patch; expected an (H, W, 3) image with H, W >= {self.min_size} (it is resized to "
                                 f"{self.sizes[0]}x{self.sizes[0]})")
        return torch.stack([self._one(img) for img in batch])

    def _one(self, img: Image.Image) -> torch.Tensor:
        halves = []
        for size, mean, std in zip(self.sizes, self.means, self.stds):
            resized = img if img.size == (size, size) else img.resize((size, size), Image.Resampling.BICUBIC)
            # Centre crop to the tower size is a no-op after the naive resize to that size.
            x = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)
            x = x.to(torch.float32).div(255)  # torchvision to_tensor
            m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
            s = torch.tensor(std, dtype=torch.float32)[:, None, None]
            halves.append((x - m) / s)  # torchvision normalize: sub then div, float32
        return torch.cat(halves, dim=0)

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` that the original processor writes."""
        fused = len(self.sizes) == 2
        return {
            "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                         "AutoProcessor": "processing_prismatic.PrismaticProcessor"},
            "image_processor_type": "PrismaticImageProcessor",
            "image_resize_strategy": "resize-naive",
            "input_sizes": [[3, s, s] for s in self.sizes],
            "interpolations": ["bicubic"] * len(self.sizes),
            "means": [list(m) for m in self.means],
            "stds": [list(s) for s in self.stds],
            "use_fused_vision_backbone": fused,
        }

    def save(self, directory: str | Path) -> None:
        from ..files import write_json_atomic

        write_json_atomic(Path(directory) / "preprocessor_config.json", self.to_hf_dict())


def _as_list(images: Any) -> list:
    if isinstance(images, (Image.Image,)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(f"image array must be (H, W, 3) or (B, H, W, 3) uint8, got shape {images.shape}")
    if isinstance(images, torch.Tensor):
        return _as_list(images.detach().cpu().numpy())
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)) and len(images) > 0:
        return list(images)
    raise ValueError(f"expected a PIL image, a uint8 array (H, W, 3) or a non-empty list of them, got {type(images).__name__}")


def _to_pil(img: Any, index: int) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB") if img.mode != "RGB" else img
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    if not isinstance(img, np.ndarray):
        raise ValueError(f"image {index}: expected a PIL image or a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"image {index}: expected dtype uint8 with values 0..255, got {img.dtype} "
                         "(convert with (x * 255).round().astype(np.uint8) if it is in [0, 1])")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image {index}: expected shape (H, W, 3) RGB, got {tuple(img.shape)}")
    return Image.fromarray(img)

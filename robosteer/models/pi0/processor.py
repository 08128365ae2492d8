"""pi0's inputs and outputs outside the network: normaliser statistics, images, prompts.

- ``Pi0Normalizer.from_folder(folder)`` reads lerobot's processor pipelines
  (``policy_preprocessor.json`` -> its ``normalizer_processor`` step and state file,
  ``policy_postprocessor.json`` -> ``unnormalizer_processor``); the formulas are lerobot's
  (``MEAN_STD``: ``(x - mean) / (std + eps)``, inverse ``x * std + mean``; ``MIN_MAX``, ``QUANTILES``,
  ``QUANTILE10`` map to [-1, 1]; ``IDENTITY`` passes through).
- ``prepare_image(u8)`` is lerobot's ``_preprocess_images`` for one camera: ``/255``, openpi's
  ``resize_with_pad`` when the size is not the model's (bilinear, ``align_corners=False``, clamp [0, 1],
  centred zero pad), then ``*2 - 1``.
- ``load_tokenizer(folder)`` is the tokenizer artifact the preprocessor names; prompts get a trailing
  newline (``Pi0NewLineProcessor``) and are padded right to ``tokenizer_max_length``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...files import FileFormatError, read_json
from .config import ACTION_KEY, STATE_KEY, Pi0Config

log = logging.getLogger(__name__)

PREPROCESSOR = "policy_preprocessor.json"
POSTPROCESSOR = "policy_postprocessor.json"
_NEEDS = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
          "QUANTILE10": ("q10", "q90"), "IDENTITY": ()}


@dataclass
class FeatureNorm:
    """How one feature (``observation.state`` or ``action``) is normalised: lerobot's ``_apply_transform``."""

    mode: str
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    eps: float = 1e-8

    def _stat(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return self.stats[name].to(device=like.device, dtype=like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "IDENTITY":
            return x
        if self.mode == "MEAN_STD":
            return (x - self._stat("mean", x)) / (self._stat("std", x) + self.eps)
        low, high = (self._stat(n, x) for n in _NEEDS[self.mode])
        denom = high - low
        denom = torch.where(denom == 0, torch.tensor(self.eps, device=x.device, dtype=x.dtype), denom)
        return 2 * (x - low) / denom - 1

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "IDENTITY":
            return x
        if self.mode == "MEAN_STD":
            return x * self._stat("std", x) + self._stat("mean", x)
        low, high = (self._stat(n, x) for n in _NEEDS[self.mode])
        denom = high - low
        denom = torch.where(denom == 0, torch.tensor(self.eps, device=x.device, dtype=x.dtype), denom)
        if self.mode == "MIN_MAX":
            return (x + 1) / 2 * denom + low
        return (x + 1.0) * denom / 2.0 + low


@dataclass
class Pi0Normalizer:
    """The state normaliser (preprocessor) and the action unnormaliser (postprocessor)."""

    state: FeatureNorm
    action: FeatureNorm

    @classmethod
    def identity(cls) -> "Pi0Normalizer":
        return cls(FeatureNorm("IDENTITY"), FeatureNorm("IDENTITY"))

    @classmethod
    def from_folder(cls, folder: str | Path, cfg: Pi0Config) -> "Pi0Normalizer":
        """Read both pipelines; a missing file or statistic names the file and the key."""
        folder = Path(folder)
        state = _pipeline_norm(folder, PREPROCESSOR, "normalizer_processor", STATE_KEY, cfg)
        action = _pipeline_norm(folder, POSTPROCESSOR, "unnormalizer_processor", ACTION_KEY, cfg)
        return cls(state, action)


def _pipeline_norm(folder: Path, name: str, registry: str, key: str, cfg: Pi0Config) -> FeatureNorm:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {name} (lerobot's processor pipeline with the normaliser statistics); "
                                "robosteer needs it to normalise the state and unnormalise the actions")
    pipeline = read_json(path, "lerobot processor pipeline")
    steps = pipeline.get("steps") if isinstance(pipeline, dict) else None
    if not isinstance(steps, list):
        raise FileFormatError(path, "steps", "expected a list of processor steps")
    found = [s for s in steps if isinstance(s, dict) and s.get("registry_name") == registry]
    if not found:
        raise FileFormatError(path, "steps", f"no {registry!r} step (it holds the {key} statistics)")
    step = found[0]
    config = step.get("config", {})
    kind = {"observation.state": "STATE", "action": "ACTION"}[key]
    mode = config.get("norm_map", {}).get(kind, cfg.norm_map.get(kind, "IDENTITY"))
    if mode not in _NEEDS:
        raise FileFormatError(path, f"config.norm_map.{kind}", f"expected one of {sorted(_NEEDS)}, got {mode!r}")
    eps = float(config.get("eps", 1e-8))
    if mode == "IDENTITY":
        return FeatureNorm(mode, eps=eps)
    state_file = step.get("state_file")
    if not isinstance(state_file, str):
        raise FileFormatError(path, f"{registry}.state_file", f"expected the safetensors file with the {key} statistics")
    stats_path = folder / state_file
    if not stats_path.is_file():
        raise FileNotFoundError(f"{path} names {state_file} for the {key} statistics, but {stats_path} does not exist")
    from safetensors.torch import load_file

    tensors = load_file(str(stats_path))
    stats = {}
    for stat in _NEEDS[mode]:
        full = f"{key}.{stat}"
        if full not in tensors:
            raise FileFormatError(stats_path, full, f"missing: {mode} normalisation of {key} needs {list(_NEEDS[mode])}")
        stats[stat] = tensors[full].to(torch.float32)
    dim = cfg.state_dim if key == STATE_KEY else cfg.action_dim
    for stat, value in stats.items():
        if value.shape != (dim,):
            raise FileFormatError(stats_path, f"{key}.{stat}", f"expected shape [{dim}] (config.json), got {list(value.shape)}")
    return FeatureNorm(mode, stats, eps)


def resize_with_pad(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """openpi's ``resize_with_pad_torch`` on ``[B, C, H, W]`` float in [0, 1]: keep the aspect ratio, pad with 0."""
    _, _, cur_h, cur_w = images.shape
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    top, extra_h = divmod(height - new_h, 2)
    left, extra_w = divmod(width - new_w, 2)
    return F.pad(resized, (left, left + extra_w, top, top + extra_h), mode="constant", value=0.0)


def prepare_image(image: Any, size: int, where: str = "image") -> torch.Tensor:
    """``uint8 [B, H, W, 3]`` (or float in [0, 1]) -> SigLIP input ``[B, 3, size, size]`` float32 in [-1, 1]."""
    x = torch.as_tensor(image)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{where}: expected uint8 [B, H, W, 3], got shape {tuple(x.shape)}")
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    x = x.permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != (size, size):
        x = resize_with_pad(x, size, size)
    return x * 2.0 - 1.0


def load_tokenizer(folder: Path):
    """The folder's tokenizer artifact (``tokenizer_name`` of the preprocessor's tokenizer step), or None."""
    path = folder / PREPROCESSOR
    name = "tokenizer"
    if path.is_file():
        steps = read_json(path, "lerobot processor pipeline").get("steps", [])
        for step in steps:
            if isinstance(step, dict) and step.get("registry_name") == "tokenizer_processor":
                name = (step.get("artifacts") or {}).get("tokenizer_name", name)
    directory = folder / name
    if not (directory / "tokenizer.json").is_file():
        log.info("%s has no tokenizer folder %r; pass input_ids and attention_mask", folder, name)
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def tokenize(tokenizer, instructions: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """lerobot's pi0 prompt: a trailing ``\\n``, padded right to ``max_length`` -> ``(ids, bool mask)``."""
    if tokenizer is None:
        raise ValueError("this pi0 folder has no tokenizer; pass input_ids= and attention_mask= instead of instruction=")
    texts = [t if t.endswith("\n") else t + "\n" for t in instructions]
    out = tokenizer(texts, max_length=max_length, truncation=True, padding="max_length", padding_side="right",
                    return_tensors="pt")
    return out["input_ids"].long(), out["attention_mask"].bool()

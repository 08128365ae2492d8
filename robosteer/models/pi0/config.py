"""The pi0 configuration: what a lerobot ``config.json`` with ``"type": "pi0"`` says, validated.

lerobot writes ``PI0Config`` with draccus; robosteer reads the fields that change the computation and
names the file and the field when one is missing or malformed. The Gemma sizes hide behind variant
names (``gemma_2b`` for the VLM, ``gemma_300m`` for the action expert, as in openpi and lerobot); a
folder whose variants are not these must say what they stand for in ``tiny_dims.json`` (the format of
the test fixtures: ``gemma_variants``, ``vision_config_overrides``, ``vocab_size``).

Usage::

    cfg = Pi0Config.from_folder("checkpoints/pi0_base")   # config.json (+ tiny_dims.json for test sizes)
    cfg = Pi0Config.default()                              # lerobot's PI0Config defaults, gemma_2b + gemma_300m
    cfg.vlm.n_heads, cfg.expert.width, cfg.image_keys
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ...files import FileFormatError, read_json

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
CONFIG_NAME = "config.json"
DIMS_NAME = "tiny_dims.json"


@dataclass(frozen=True)
class GemmaDims:
    """One Gemma stack (openpi's ``gemma.Config``): ``width``, ``depth``, ``mlp_dim``, heads, ``head_dim``."""

    width: int
    depth: int
    mlp_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        for name in ("width", "depth", "mlp_dim", "n_heads", "n_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GemmaDims.{name} must be a positive int, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"GemmaDims: {self.n_heads} query heads cannot share {self.n_kv_heads} key/value heads")


@dataclass(frozen=True)
class SiglipDims:
    """The SigLIP vision tower (PaliGemma's, ``So400m/14`` in the real model)."""

    width: int = 1152
    depth: int = 27
    n_heads: int = 16
    mlp_dim: int = 4304
    patch: int = 14
    image_size: int = 224

    @property
    def head_dim(self) -> int:
        return self.width // self.n_heads

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch) ** 2


# openpi / lerobot ``get_gemma_config``.
GEMMA_VARIANTS: dict[str, GemmaDims] = {
    "gemma_2b": GemmaDims(width=2048, depth=18, mlp_dim=16_384, n_heads=8, n_kv_heads=1, head_dim=256),
    "gemma_300m": GemmaDims(width=1024, depth=18, mlp_dim=4096, n_heads=8, n_kv_heads=1, head_dim=256),
}
PALIGEMMA_VOCAB = 257_152
NORM_MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10")


@dataclass(frozen=True)
class Pi0Config:
    """Everything the pi0 computation depends on; ``image_keys`` in the config's order."""

    vlm: GemmaDims = GEMMA_VARIANTS["gemma_2b"]
    expert: GemmaDims = GEMMA_VARIANTS["gemma_300m"]
    vision: SiglipDims = SiglipDims()
    vocab_size: int = PALIGEMMA_VOCAB
    image_keys: tuple[str, ...] = (IMAGE_PREFIX + "base_0_rgb", IMAGE_PREFIX + "left_wrist_0_rgb",
                                   IMAGE_PREFIX + "right_wrist_0_rgb")
    state_dim: int = 32
    action_dim: int = 32
    max_state_dim: int = 32
    max_action_dim: int = 32
    chunk_size: int = 50
    n_action_steps: int = 50
    num_inference_steps: int = 10
    min_period: float = 4e-3
    max_period: float = 4.0
    tokenizer_max_length: int = 48
    time_beta_alpha: float = 1.5
    time_beta_beta: float = 1.0
    time_scale: float = 0.999
    time_offset: float = 0.001
    dtype: str = "float32"
    norm_map: dict = field(default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"})
    variants: tuple[str, str] = ("gemma_2b", "gemma_300m")

    def __post_init__(self) -> None:
        if not self.image_keys:
            raise ValueError("Pi0Config.image_keys: pi0 needs at least one camera")
        for name in ("state_dim", "action_dim", "chunk_size", "num_inference_steps", "tokenizer_max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Pi0Config.{name} must be a positive int, got {value!r}")
        if self.state_dim > self.max_state_dim or self.action_dim > self.max_action_dim:
            raise ValueError(f"Pi0Config: state/action dims {self.state_dim}/{self.action_dim} exceed the padded "
                             f"sizes {self.max_state_dim}/{self.max_action_dim}")
        shared = ("n_heads", "n_kv_heads", "head_dim")
        if any(getattr(self.vlm, f) != getattr(self.expert, f) for f in shared):
            raise ValueError("Pi0Config: the action expert attends to the VLM's keys and values, so both need the same "
                             f"heads, key/value heads and head_dim; got {[getattr(self.vlm, f) for f in shared]} and "
                             f"{[getattr(self.expert, f) for f in shared]}")
        if self.expert.width % 2:
            raise ValueError(f"Pi0Config: the time embedding needs an even expert width, got {self.expert.width}")

    @property
    def camera_names(self) -> tuple[str, ...]:
        """``image_keys`` without ``observation.images.`` (``"base_0_rgb"``)."""
        return tuple(k.removeprefix(IMAGE_PREFIX) for k in self.image_keys)

    @property
    def action_chunk(self) -> int:
        """Actions per prediction (``chunk_size``), under the name OpenVLA's config uses."""
        return self.chunk_size

    @property
    def n_views(self) -> int:
        """Cameras per observation, empty ones included: SigLIP's batch holds this many rows per example."""
        return len(self.image_keys)

    @property
    def prefix_len(self) -> int:
        return len(self.image_keys) * self.vision.n_patches + self.tokenizer_max_length

    def replace(self, **changes: Any) -> "Pi0Config":
        return replace(self, **changes)

    @classmethod
    def default(cls) -> "Pi0Config":
        """lerobot's ``PI0Config`` defaults with openpi's three cameras and 32-d state and action (``pi0_base``)."""
        return cls()

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Pi0Config":
        """Read ``folder/config.json`` (lerobot's ``PI0Config``), with errors that name the field."""
        folder = Path(folder)
        path = folder / CONFIG_NAME
        raw = read_json(path, "pi0 config")
        if not isinstance(raw, dict):
            raise FileFormatError(path, None, "expected a JSON object (lerobot's PI0Config)")
        kind = raw.get("type")
        if kind != "pi0":
            raise FileFormatError(path, "type", f"expected 'pi0' (a lerobot pi0 policy), got {kind!r}"
                                  + ("; pi0.5 is not supported yet" if kind == "pi05" else ""))
        get = _Reader(raw, path)
        variants = (get.str("paligemma_variant", "gemma_2b"), get.str("action_expert_variant", "gemma_300m"))
        dims, vision, vocab = _variant_dims(variants, folder, path)
        features = get.dict("input_features")
        image_keys = tuple(k for k, v in features.items() if isinstance(v, dict) and v.get("type") == "VISUAL")
        n_empty = get.int("empty_cameras", 0)
        image_keys += tuple(f"{IMAGE_PREFIX}empty_camera_{i}" for i in range(n_empty)
                            if f"{IMAGE_PREFIX}empty_camera_{i}" not in image_keys)
        if not image_keys:
            raise FileFormatError(path, "input_features", "no VISUAL feature: pi0 needs at least one camera")
        outputs = get.dict("output_features")
        max_state, max_action = get.int("max_state_dim", 32), get.int("max_action_dim", 32)
        # lerobot's validate_features: an absent state / action feature is the padded size
        state_dim = (_feature_dim(features[STATE_KEY], path, f"input_features.{STATE_KEY}")
                     if STATE_KEY in features else max_state)
        action_dim = (_feature_dim(outputs[ACTION_KEY], path, f"output_features.{ACTION_KEY}")
                      if ACTION_KEY in outputs else max_action)
        resolution = raw.get("image_resolution", [224, 224])
        if (not isinstance(resolution, list) or len(resolution) != 2 or resolution[0] != resolution[1]
                or not all(isinstance(r, int) for r in resolution)):
            raise FileFormatError(path, "image_resolution", f"expected a square [S, S], got {resolution!r}")
        vision = replace(vision, image_size=resolution[0])
        norm_map = get.dict("normalization_mapping")
        for key, mode in norm_map.items():
            if mode not in NORM_MODES:
                raise FileFormatError(path, f"normalization_mapping.{key}", f"expected one of {NORM_MODES}, got {mode!r}")
        if raw.get("use_relative_actions"):
            raise FileFormatError(path, "use_relative_actions", "relative actions are not supported (expected false)")
        return cls(
            vlm=dims[0], expert=dims[1], vision=vision, vocab_size=vocab, image_keys=image_keys,
            state_dim=state_dim, action_dim=action_dim, max_state_dim=max_state, max_action_dim=max_action,
            chunk_size=get.int("chunk_size", 50), n_action_steps=get.int("n_action_steps", 50),
            num_inference_steps=get.int("num_inference_steps", 10),
            min_period=get.float("min_period", 4e-3), max_period=get.float("max_period", 4.0),
            tokenizer_max_length=get.int("tokenizer_max_length", 48),
            time_beta_alpha=get.float("time_sampling_beta_alpha", 1.5),
            time_beta_beta=get.float("time_sampling_beta_beta", 1.0),
            time_scale=get.float("time_sampling_scale", 0.999), time_offset=get.float("time_sampling_offset", 0.001),
            dtype=get.str("dtype", "float32"), norm_map=dict(norm_map), variants=variants,
        )


class _Reader:
    """Typed field access on a config dict; a wrong type names the file and the field."""

    def __init__(self, raw: dict, path: Path) -> None:
        self.raw, self.path = raw, path

    def _get(self, name: str, default: Any, types: tuple, what: str) -> Any:
        value = self.raw.get(name, default)
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            raise FileFormatError(self.path, name, f"expected {what}, got {value!r}")
        return value

    def int(self, name: str, default: int) -> int:
        return self._get(name, default, (int,), "an integer")

    def float(self, name: str, default: float) -> float:
        return float(self._get(name, default, (int, float), "a number"))

    def str(self, name: str, default: str) -> str:
        return self._get(name, default, (str,), "a string")

    def dict(self, name: str) -> dict:
        if name not in self.raw:
            raise FileFormatError(self.path, name, "missing (lerobot writes it in every PI0Config)")
        return self._get(name, None, (dict,), "an object")


def _feature_dim(feature: Any, path: Path, where: str) -> int:
    shape = feature.get("shape") if isinstance(feature, dict) else None
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] > 0):
        raise FileFormatError(path, where, f"expected {{'shape': [n]}}, got {feature!r}")
    return shape[0]


def _variant_dims(variants: tuple[str, str], folder: Path, config_path: Path):
    """The two Gemma variants' sizes, the SigLIP sizes and the vocabulary (``tiny_dims.json`` for others)."""
    if all(v in GEMMA_VARIANTS for v in variants):
        return (GEMMA_VARIANTS[variants[0]], GEMMA_VARIANTS[variants[1]]), SiglipDims(), PALIGEMMA_VOCAB
    dims_path = folder / DIMS_NAME
    if not dims_path.is_file():
        unknown = [v for v in variants if v not in GEMMA_VARIANTS]
        raise FileFormatError(config_path, "paligemma_variant" if unknown[0] == variants[0] else "action_expert_variant",
                              f"unknown Gemma variant {unknown[0]!r} (known: {sorted(GEMMA_VARIANTS)}); "
                              f"a folder with other sizes needs {DIMS_NAME} beside config.json")
    raw = read_json(dims_path, "pi0 variant sizes")
    table = raw.get("gemma_variants") if isinstance(raw, dict) else None
    if not isinstance(table, dict):
        raise FileFormatError(dims_path, "gemma_variants", "expected an object of variant name -> sizes")
    dims = []
    for name in variants:
        if name in GEMMA_VARIANTS:
            dims.append(GEMMA_VARIANTS[name])
            continue
        entry = table.get(name)
        try:
            dims.append(GemmaDims(width=entry["width"], depth=entry["depth"], mlp_dim=entry["mlp_dim"],
                                  n_heads=entry["num_heads"], n_kv_heads=entry["num_kv_heads"], head_dim=entry["head_dim"]))
        except (TypeError, KeyError, ValueError) as err:
            raise FileFormatError(dims_path, f"gemma_variants.{name}",
                                  f"expected width, depth, mlp_dim, num_heads, num_kv_heads, head_dim ({err})") from err
    over = raw.get("vision_config_overrides", {})
    try:
        vision = SiglipDims(width=over.get("hidden_size", 1152), depth=over.get("num_hidden_layers", 27),
                            n_heads=over.get("num_attention_heads", 16), mlp_dim=over.get("intermediate_size", 4304),
                            patch=over.get("patch_size", 14), image_size=over.get("image_size", 224))
    except AttributeError as err:
        raise FileFormatError(dims_path, "vision_config_overrides", "expected an object") from err
    projection = over.get("projection_dim", dims[0].width)
    if projection != dims[0].width:
        raise FileFormatError(dims_path, "vision_config_overrides.projection_dim",
                              f"expected the VLM width {dims[0].width}, got {projection!r}")
    vocab = raw.get("vocab_size", PALIGEMMA_VOCAB)
    if not isinstance(vocab, int) or vocab <= 0:
        raise FileFormatError(dims_path, "vocab_size", f"expected a positive integer, got {vocab!r}")
    return tuple(dims), vision, vocab

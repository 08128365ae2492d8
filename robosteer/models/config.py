"""Configuration of an OpenVLA-architecture model, and its ``config.json`` form.

``VLAConfig`` is what robosteer builds a model from. It reads and writes the
``config.json`` of a Hugging Face OpenVLA checkpoint (``model_type: "openvla"``):
vision towers are named there by timm ids, which map to the known sizes below;
tiny test models give sizes explicitly through ``timm_override_kwargs`` (the
fixture convention) so that a file written here still reads as an OpenVLA
config. Fields that only robosteer knows (a proprio token, the prompt-suffix
token of a non-Llama tokenizer, the OpenVLA-OFT switches ``n_views``,
``proprio_projector``, ``action_chunk``, ``action_head``, ``action_head_blocks``, ``normalization`` and
``use_film``) live under the ``"robosteer"`` key, only when they differ from
their defaults, and are absent for real checkpoints (an OFT folder's switches come
from its head files and ``load_vla(..., overrides=...)``).

Usage::

    cfg = VLAConfig.from_hf_dict(json.load(open("config.json")))
    cfg.towers[0].width, cfg.text["num_hidden_layers"]
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..data.statistics import check_statistics
from ..files import FileFormatError
from .config_fields import check_text_config, get_dict, get_int, get_list, get_str, report_unknown, unknown_fields
from .constants import (
    DINO_MEAN,
    DINO_STD,
    LLAMA2_ACTION_VOCAB_END,
    LLAMA2_PROMPT_SUFFIX_ID,
    N_ACTION_BINS,
    SIGLIP_MEAN,
    SIGLIP_STD,
)

# Sizes implied by the timm ids a checkpoint names (timm's registered definitions).
# Keys are the id without the pretrained tag (".lvd142m").
_KNOWN_TIMM_TOWERS: dict[str, dict[str, Any]] = {
    "vit_large_patch14_reg4_dinov2": dict(kind="dino", patch_size=14, width=1024, depth=24, heads=16, mlp_ratio=4.0,
                                          reg_tokens=4, class_token=True, layerscale=True, no_embed_class=True),
    "vit_base_patch14_reg4_dinov2": dict(kind="dino", patch_size=14, width=768, depth=12, heads=12, mlp_ratio=4.0,
                                         reg_tokens=4, class_token=True, layerscale=True, no_embed_class=True),
    "vit_small_patch14_reg4_dinov2": dict(kind="dino", patch_size=14, width=384, depth=12, heads=6, mlp_ratio=4.0,
                                          reg_tokens=4, class_token=True, layerscale=True, no_embed_class=True),
    "vit_so400m_patch14_siglip_224": dict(kind="siglip", patch_size=14, width=1152, depth=27, heads=16,
                                          mlp_ratio=3.7362, attn_pool=True),
    "vit_so400m_patch14_siglip_384": dict(kind="siglip", patch_size=14, width=1152, depth=27, heads=16,
                                          mlp_ratio=3.7362, attn_pool=True),
    "vit_base_patch16_siglip_224": dict(kind="siglip", patch_size=16, width=768, depth=12, heads=12, mlp_ratio=4.0,
                                        attn_pool=True),
}

# The backbone ids of Prismatic, mapped to their timm ids (one id per tower).
_VISION_BACKBONES: dict[str, tuple[str, ...]] = {
    "dinosiglip-vit-so-224px": ("vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"),
    "dinov2-vit-l": ("vit_large_patch14_reg4_dinov2.lvd142m",),
    "siglip-vit-so400m": ("vit_so400m_patch14_siglip_224",),
}

# transformers 4.40.1 LlamaConfig defaults: the values an OpenVLA ``text_config`` implies
# for every field it omits (it stores only differences). Note rms_norm_eps 1e-6, not Llama-2's 1e-5.
LLAMA_440_DEFAULTS: dict[str, Any] = dict(
    model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048,
    rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None, attention_bias=False, attention_dropout=0.0,
    mlp_bias=False, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pretraining_tp=1,
)

PROJECTORS = ("fused-gelu-mlp", "gelu-mlp", "linear")
# OpenVLA-OFT's extensions (models/action_heads.py): the action head, the proprio projector, the normalisation.
ACTION_HEADS = ("tokens", "l1-regression")  # tokens: OpenVLA's 256 bins; l1-regression: OFT's MLPResNet head
PROPRIO_PROJECTORS = ("linear", "mlp")  # linear: robosteer's proprio token; mlp: OFT's fc1 GELU fc2
NORMALIZATIONS = ("openvla", "bounds_q99", "bounds")  # openvla: q01/q99 as OpenVLA; OFT's q01/q99 or min/max (+1e-8)
RESIZE_STRATEGIES = ("resize-naive",)


@dataclass(frozen=True)
class ViTConfig:
    """One vision tower, in timm's VisionTransformer terms (keys load as timm names them)."""

    kind: str  # "dino" or "siglip": also the tower's name at hook sites
    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_dim: int = 4096
    reg_tokens: int = 0  # DINOv2 "with registers" prefix tokens
    class_token: bool = False
    layerscale: bool = False  # ls1/ls2 with a per-channel ``scale_factor``
    attn_pool: bool = False  # SigLIP's MAP head: loaded, never used for features
    no_embed_class: bool = False  # pos_embed covers only the patches; prefix tokens get none
    norm_eps: float = 1e-6
    mean: tuple[float, float, float] = DINO_MEAN
    std: tuple[float, float, float] = DINO_STD
    timm_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("dino", "siglip"):
            raise ValueError(f"ViTConfig.kind must be 'dino' or 'siglip', got {self.kind!r}")
        for name in ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ViTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"ViT width {self.width} is not divisible by its {self.heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.depth < 2:
            raise ValueError("a ViT tower needs depth >= 2: features come from its second-to-last block")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def n_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def feature_layer(self) -> int:
        """Index of the block whose output is the feature (OpenVLA: the second-to-last)."""
        return self.depth - 2


def tower_from_timm(timm_id: str, image_size: int, overrides: dict[str, Any] | None = None) -> ViTConfig:
    """The tower a checkpoint's timm id implies, with timm-style ``overrides`` (embed_dim, depth, ...)."""
    base = timm_id.split(".")[0]
    if base not in _KNOWN_TIMM_TOWERS:
        raise ValueError(f"unknown vision tower {timm_id!r}; known timm ids: {sorted(_KNOWN_TIMM_TOWERS)}")
    spec = dict(_KNOWN_TIMM_TOWERS[base])
    overrides = dict(overrides or {})
    renames = {"embed_dim": "width", "num_heads": "heads", "img_size": "image_size"}
    for key in list(overrides):
        if key in renames:
            overrides[renames[key]] = overrides.pop(key)
    allowed = {"width", "depth", "heads", "mlp_ratio", "patch_size", "image_size", "reg_tokens", "mlp_dim"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unsupported timm override(s) {sorted(unknown)} for {timm_id}; supported: {sorted(allowed)}")
    spec.update(overrides)
    mlp_ratio = spec.pop("mlp_ratio")
    spec.setdefault("mlp_dim", int(spec["width"] * mlp_ratio))  # timm: int(embed_dim * mlp_ratio)
    spec.setdefault("image_size", image_size)
    if spec["kind"] == "dino":
        spec.update(mean=DINO_MEAN, std=DINO_STD)
    else:
        spec.update(mean=SIGLIP_MEAN, std=SIGLIP_STD)
    return ViTConfig(timm_id=timm_id, **spec)


def _tower_overrides(tower: ViTConfig) -> dict[str, Any]:
    """The timm-style kwargs that rebuild ``tower`` from its timm id (empty for the stock size)."""
    stock = _KNOWN_TIMM_TOWERS[(tower.timm_id or _default_timm_id(tower.kind)).split(".")[0]]
    stock = dict(stock, reg_tokens=stock.get("reg_tokens", 0))
    out: dict[str, Any] = {}
    for ours, timm_name in (("width", "embed_dim"), ("depth", "depth"), ("heads", "num_heads"),
                            ("patch_size", "patch_size"), ("reg_tokens", "reg_tokens")):
        if stock[ours] != getattr(tower, ours):
            out[timm_name] = getattr(tower, ours)
    if int(tower.width * stock["mlp_ratio"]) != tower.mlp_dim:  # timm: int(embed_dim * mlp_ratio)
        out["mlp_dim"] = tower.mlp_dim
    return out


@dataclass(frozen=True)
class VLAConfig:
    """Everything needed to build an OpenVLA-architecture model.

    ``VLAConfig.from_hf_dict(d)`` reads an OpenVLA ``config.json``; ``to_hf_dict()`` writes it back.
    """

    towers: tuple[ViTConfig, ...]  # one (DINO or SigLIP) or two (DINO then SigLIP, "fused")
    text: dict[str, Any]  # Llama text_config as stored (only differences from LLAMA_440_DEFAULTS)
    projector: str = "fused-gelu-mlp"
    n_action_bins: int = N_ACTION_BINS
    action_vocab_end: int = LLAMA2_ACTION_VOCAB_END  # action tokens are ids [end - n_bins, end)
    pad_token_id: int = 32000
    prompt_suffix_token_id: int | None = LLAMA2_PROMPT_SUFFIX_ID  # appended before generation if missing
    proprio_dim: int = 0  # > 0 adds one projected proprio token after the patches (off for OpenVLA)
    resize_strategy: str = "resize-naive"
    norm_stats: dict[str, Any] = field(default_factory=dict)
    torch_dtype: str = "bfloat16"
    hf_extra: dict[str, Any] = field(default_factory=dict)  # other config.json fields, kept for round trips
    # OpenVLA-OFT switches, all off for OpenVLA checkpoints (models/action_heads.py):
    n_views: int = 1  # images per observation (OFT's num_images_in_input), patches concatenated in view order
    proprio_projector: str = "linear"  # with proprio_dim > 0: "linear" (robosteer) or "mlp" (OFT's ProprioProjector)
    action_chunk: int = 1  # K actions per forward pass (OFT's NUM_ACTIONS_CHUNK); K > 1 needs a regression head
    action_head: str = "tokens"  # "l1-regression": K*A empty action slots + stop token, bidirectional attention
    action_head_blocks: int = 2  # MLPResNet blocks of the l1-regression head
    normalization: str = "openvla"  # how actions/proprio are (un)normalised: "openvla", or OFT's "bounds_q99"/"bounds"
    use_film: bool = False  # OFT+'s FiLM: the vision towers' blocks modulated by the instruction's mean embedding

    def __post_init__(self) -> None:
        if not self.towers or len(self.towers) > 2:
            raise ValueError(f"an OpenVLA model has one or two vision towers, got {len(self.towers)}")
        if len({t.kind for t in self.towers}) != len(self.towers):
            raise ValueError("two vision towers of the same kind are not supported (their hook names would clash)")
        if len({t.n_patches for t in self.towers}) != 1:
            raise ValueError(f"towers disagree on patch count: {[t.n_patches for t in self.towers]}")
        if self.projector not in PROJECTORS:
            raise ValueError(f"unknown projector {self.projector!r}; known: {PROJECTORS}")
        if self.resize_strategy not in RESIZE_STRATEGIES:
            raise ValueError(f"unsupported image_resize_strategy {self.resize_strategy!r}; supported: {RESIZE_STRATEGIES}")
        vocab = self.llama_kwargs()["vocab_size"]
        if not 0 < self.n_action_bins <= self.action_vocab_end <= vocab:
            raise ValueError(
                f"action tokens [{self.action_vocab_end - self.n_action_bins}, {self.action_vocab_end}) "
                f"do not fit the vocabulary of {vocab}"
            )
        if self.proprio_dim < 0:
            raise ValueError(f"proprio_dim must be >= 0, got {self.proprio_dim}")
        kw = self.llama_kwargs()
        if kw["hidden_size"] % kw["num_attention_heads"]:
            raise ValueError(f"LLM hidden_size {kw['hidden_size']} is not divisible by {kw['num_attention_heads']} heads")
        self._check_oft_fields()

    def _check_oft_fields(self) -> None:
        for name, allowed in (("action_head", ACTION_HEADS), ("proprio_projector", PROPRIO_PROJECTORS),
                              ("normalization", NORMALIZATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"VLAConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, low in (("n_views", 1), ("action_chunk", 1), ("action_head_blocks", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"VLAConfig.{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.use_film, bool):
            raise ValueError(f"VLAConfig.use_film must be true or false, got {self.use_film!r}")
        if self.use_film and not self.parallel_decoding:
            raise ValueError("VLAConfig.use_film needs action_head='l1-regression': with token actions the input "
                             "holds the action tokens while training, and FiLM would read them")
        if self.action_chunk > 1 and not self.parallel_decoding:
            raise ValueError(f"VLAConfig.action_chunk={self.action_chunk} needs action_head='l1-regression' "
                             "(token actions are decoded one per step)")

    @property
    def parallel_decoding(self) -> bool:
        """OFT's layout: empty action slots + stop token after the prompt, all attending to each other."""
        return self.action_head != "tokens"

    # --- derived sizes -------------------------------------------------------------------
    @property
    def n_patches(self) -> int:
        return self.towers[0].n_patches

    @property
    def vision_dim(self) -> int:
        return sum(t.width for t in self.towers)

    @property
    def llm_dim(self) -> int:
        return self.llama_kwargs()["hidden_size"]

    @property
    def image_size(self) -> int:
        return self.towers[0].image_size

    @property
    def action_dim(self) -> int:
        """Dimensions of an action: read from the first dataset's statistics (7 when none)."""
        for stats in self.norm_stats.values():
            return len(stats["action"]["q01"])
        return 7

    def llama_kwargs(self) -> dict[str, Any]:
        """Complete Llama settings: the stored ``text`` over the transformers 4.40.1 defaults."""
        kw = dict(LLAMA_440_DEFAULTS)
        kw.update({k: v for k, v in self.text.items() if k not in ("torch_dtype", "dtype", "transformers_version")})
        if kw.get("num_key_value_heads") is None:
            kw["num_key_value_heads"] = kw["num_attention_heads"]
        return kw

    def replace(self, **changes: Any) -> "VLAConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # --- config.json ---------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], *, source: Any = "config.json", strict: bool = False) -> "VLAConfig":
        """Read an OpenVLA ``config.json`` dict (real checkpoint or robosteer-written).

        A malformed field is a ``FileFormatError`` naming ``source`` (the file) and the field; fields
        robosteer does not know are a warning, or with ``strict=True`` an error (config_fields.py).
        """
        if not isinstance(d, dict):
            raise FileFormatError(source, None, f"expected a JSON object (an OpenVLA config), got {type(d).__name__}")
        d = copy.deepcopy(d)
        if d.get("model_type") not in ("openvla", "prismatic"):
            raise FileFormatError(source, "model_type", f"expected 'openvla', got {d.get('model_type')!r}")
        text = check_text_config(d, source)
        report_unknown(unknown_fields(d, _VISION_BACKBONES), source, strict)
        extras = get_dict(d, "robosteer", source)
        d.pop("robosteer", None)
        timm_ids = d.get("timm_model_ids") or _VISION_BACKBONES.get(get_str(d, "vision_backbone_id", "", source))
        if not timm_ids:
            raise FileFormatError(source, "vision_backbone_id", f"names no known vision backbone (got "
                                  f"{d.get('vision_backbone_id')!r}; known: {sorted(_VISION_BACKBONES)}) and there "
                                  "are no timm_model_ids")
        if not isinstance(timm_ids, (list, tuple)) or not 1 <= len(timm_ids) <= 2 or \
                not all(isinstance(t, str) for t in timm_ids):
            raise FileFormatError(source, "timm_model_ids", f"expected a list of one or two timm ids, got {timm_ids!r}")
        fused = d.get("use_fused_vision_backbone", len(timm_ids) == 2)
        if not isinstance(fused, bool):
            raise FileFormatError(source, "use_fused_vision_backbone", f"expected true or false, got {fused!r}")
        if not fused:
            timm_ids = timm_ids[:1]
        n = len(timm_ids)
        sizes = get_list(d, "image_sizes", source, length=n, kind=int, what="image sizes") or [224] * n
        overrides = get_list(d, "timm_override_kwargs", source, length=n, kind=dict, what="objects") or [{}] * n
        if "timm_override_kwargs" not in d and isinstance(d.get("fixture_timm_overrides"), dict):
            # the OpenVLA-OFT reference fixture's form of the same sizes: {timm id: kwargs}
            overrides = [get_dict(d["fixture_timm_overrides"], tid, source, field=f"fixture_timm_overrides.{tid}")
                         for tid in timm_ids]
        acts = get_list(d, "timm_override_act_layers", source, length=n, kind=(str, type(None)), what="names") or [None] * n
        if any(a not in (None, "gelu") for a in acts):
            raise FileFormatError(source, "timm_override_act_layers", f"expected null or 'gelu' (OpenVLA uses exact "
                                  f"GELU), got {acts}")
        try:
            towers = tuple(tower_from_timm(tid, sz, _checked_overrides(ov, source))
                           for tid, sz, ov in zip(timm_ids, sizes, overrides))
        except FileFormatError:
            raise
        except ValueError as err:
            raise FileFormatError(source, "timm_model_ids", f"the vision towers it describes are invalid: {err}") from None
        arch = get_str(d, "arch_specifier", "no-align+fused-gelu-mlp", source)
        projector = arch.split("+")[-1] if "+" in arch else arch
        known = {"text_config", "timm_model_ids", "image_sizes", "timm_override_kwargs", "norm_stats", "pad_token_id",
                 "n_action_bins", "image_resize_strategy", "torch_dtype"}
        text_pad = get_int(text, "pad_token_id", 32000, source, low=0, field="text_config.pad_token_id", optional=True)
        try:
            return cls(
                towers=towers,
                text=text,
                projector=projector,
                n_action_bins=get_int(d, "n_action_bins", N_ACTION_BINS, source, low=1),
                action_vocab_end=get_int(extras, "action_vocab_end", LLAMA2_ACTION_VOCAB_END, source, low=1,
                                         field="robosteer.action_vocab_end"),
                pad_token_id=get_int(d, "pad_token_id", 32000 if text_pad is None else text_pad, source, low=0),
                prompt_suffix_token_id=get_int(extras, "prompt_suffix_token_id", LLAMA2_PROMPT_SUFFIX_ID, source, low=0,
                                               field="robosteer.prompt_suffix_token_id", optional=True),
                proprio_dim=get_int(extras, "proprio_dim", 0, source, low=0, field="robosteer.proprio_dim"),
                **{name: extras[name] for name in _OFT_FIELDS if name in extras},
                resize_strategy=get_str(d, "image_resize_strategy", "resize-naive", source),
                norm_stats=check_statistics(d.get("norm_stats") or {}, source, "norm_stats"),
                torch_dtype=get_str(d, "torch_dtype", "bfloat16", source),
                hf_extra={k: v for k, v in d.items() if k not in known},
            )
        except FileFormatError:
            raise
        except ValueError as err:
            raise FileFormatError(source, None, f"does not describe a valid OpenVLA model: {err}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` dict, in the layout the original OpenVLA code writes."""
        d = copy.deepcopy(self.hf_extra)
        d.setdefault("model_type", "openvla")
        d.setdefault("architectures", ["OpenVLAForActionPrediction"])
        d.setdefault("auto_map", {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                                  "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"})
        d.setdefault("llm_backbone_id", "llama2-7b-pure")
        d.setdefault("llm_max_length", 2048)
        d.setdefault("pad_to_multiple_of", 64)
        d.setdefault("output_projector_states", False)
        d.setdefault("arch_specifier", f"no-align+{self.projector}")
        fused = len(self.towers) == 2
        d.setdefault("use_fused_vision_backbone", fused)
        d.setdefault("vision_backbone_id", "dinosiglip-vit-so-224px" if fused else
                     ("dinov2-vit-l" if self.towers[0].kind == "dino" else "siglip-vit-so400m"))
        d.setdefault("timm_override_act_layers", [None] * len(self.towers))
        d["timm_model_ids"] = [t.timm_id or _default_timm_id(t.kind) for t in self.towers]
        d["image_sizes"] = [t.image_size for t in self.towers]
        overrides = [_tower_overrides(t) for t in self.towers]
        if any(overrides):
            d["timm_override_kwargs"] = overrides
        d["image_resize_strategy"] = self.resize_strategy
        d["n_action_bins"] = self.n_action_bins
        d["pad_token_id"] = self.pad_token_id
        d["norm_stats"] = copy.deepcopy(self.norm_stats)
        d["text_config"] = copy.deepcopy(self.text)
        d["torch_dtype"] = self.torch_dtype
        extras = {}
        if self.action_vocab_end != LLAMA2_ACTION_VOCAB_END:
            extras["action_vocab_end"] = self.action_vocab_end
        if self.prompt_suffix_token_id != LLAMA2_PROMPT_SUFFIX_ID:
            extras["prompt_suffix_token_id"] = self.prompt_suffix_token_id
        if self.proprio_dim:
            extras["proprio_dim"] = self.proprio_dim
        defaults = VLAConfig.__dataclass_fields__
        extras.update({name: getattr(self, name) for name in _OFT_FIELDS if getattr(self, name) != defaults[name].default})
        if extras:
            d["robosteer"] = extras
        return dict(sorted(d.items()))


_OFT_FIELDS = ("n_views", "proprio_projector", "action_chunk", "action_head", "action_head_blocks", "normalization",
               "use_film")


def _checked_overrides(overrides: dict, source: Any) -> dict:
    """A tower's ``timm_override_kwargs``: integer sizes and a finite positive ``mlp_ratio``."""
    for key, value in overrides.items():
        if key == "mlp_ratio":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e6
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31
        if not ok:
            raise FileFormatError(source, f"timm_override_kwargs.{key}", f"expected a size (an integer; mlp_ratio: "
                                  f"a positive number), got {value!r}")
    return overrides


def _default_timm_id(kind: str) -> str:
    return _VISION_BACKBONES["dinosiglip-vit-so-224px"][0 if kind == "dino" else 1]


def padded_vocab_size(base_vocab: int, multiple: int = 64) -> int:
    """OpenVLA pads the embedding to a multiple of 64 beyond the base vocabulary plus <PAD>."""
    return int(math.ceil((base_vocab + 1) / multiple) * multiple)

"""An OpenVLA-architecture vision-language-action model.

Prismatic layout, with the same module tree and parameter names as the released
OpenVLA checkpoints, so their ``state_dict`` loads as it is:

- ``vision_backbone.featurizer`` (DINOv2 + registers) and ``vision_backbone.fused_featurizer`` (SigLIP);
- ``projector.fc1/fc2/fc3`` (the fused GELU MLP from concatenated patch features to the LLM width);
- ``language_model``: a ``transformers`` ``LlamaForCausalLM``.

The projected patches are inserted right after BOS (then an optional proprio token,
a robosteer extension that is off for OpenVLA checkpoints), and the LLM runs causal
attention over the whole multimodal sequence.

OpenVLA-OFT's extensions are config switches, off by default (``models/action_heads.py``):
``n_views`` images per observation (6 channels each, patches of view 0, then view 1, ...),
``proprio_projector="mlp"``, ``use_film`` (OFT+: every tower block FiLM-modulated by the instruction's
mean input embedding, :func:`instruction_embedding`), and ``action_head="l1-regression"`` with ``action_chunk`` K: the prompt
is followed by K*A zero-embedding action slots and the stop token, attention is bidirectional over
the whole sequence, and the head reads the final hidden states at the K*A positions *before* the
slots' ends, ``[last prompt token, +K*A)``, as OFT's code does (it is the next-token shift that OFT
also trains with: hidden state i goes with slot i + 1).

Usage::

    vla = robosteer.load_vla("path/to/openvla-7b", dtype=torch.bfloat16)
    action = vla.predict_action(image, "pick up the red cube", unnorm_key="bridge_orig")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from ..hooks import HookedModelMixin
from .action_heads import (
    ChunkPrediction,
    L1RegressionActionHead,
    ProprioProjector,
    action_slot_mask,
    bidirectional_mask,
    oft_normalize,
    predict_chunk,
    preprocess_views,
)
from .action_tokenizer import ActionTokenizer, normalize, unnormalize
from .config import VLAConfig
from .constants import PROMPT_TEMPLATE
from .families import Family, FamilyModelMixin, get_family
from .generation import cache_name
from .processor import ImageProcessor
from .saving import save_vla
from .vit import VisionTransformer

IGNORE_INDEX = -100  # label of positions that carry no loss (prompt, patches, padding)


class VisionBackbone(nn.Module):
    """One or two ViT towers; their patch features are concatenated on the channel axis."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.n_views = cfg.n_views
        film_dim = cfg.llm_dim if cfg.use_film else 0
        self.featurizer = VisionTransformer(cfg.towers[0], film_dim)
        if len(cfg.towers) == 2:
            self.fused_featurizer = VisionTransformer(cfg.towers[1], film_dim)

    def towers(self) -> list[VisionTransformer]:
        return [self.featurizer] + ([self.fused_featurizer] if hasattr(self, "fused_featurizer") else [])

    def forward(self, pixel_values: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3T V, S, S) -> (B, V N, sum(D)); ``language`` (B, llm_dim) for FiLM-conditioned towers."""
        if self.n_views > 1:  # OFT: each view's 3T channels through the same towers, patches in view order
            b, c, size = pixel_values.shape[0], pixel_values.shape[1] // self.n_views, pixel_values.shape[-1]
            if language is not None:  # every view of an observation gets its instruction
                language = language.repeat_interleave(self.n_views, dim=0)
            # one tower call over B * V images (observation-major), so a tower's hook sites see every view once
            patches = self._one_view(pixel_values.reshape(b * self.n_views, c, size, size), language)  # (B V, N, D)
            return patches.reshape(b, -1, patches.shape[-1])
        return self._one_view(pixel_values, language)

    def _one_view(self, pixel_values: torch.Tensor, language: torch.Tensor | None) -> torch.Tensor:
        chunks = torch.split(pixel_values, 3, dim=1)  # (B, 3T, S, S) -> (B, N, sum(D))
        return torch.cat([tower(x, language) for tower, x in zip(self.towers(), chunks)], dim=2)


class Projector(nn.Module):
    """Prismatic projectors: ``fused-gelu-mlp`` (fc1 GELU fc2 GELU fc3), ``gelu-mlp`` or ``linear``."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.kind = cfg.projector
        vis, llm = cfg.vision_dim, cfg.llm_dim
        if self.kind == "fused-gelu-mlp":
            self.fc1 = nn.Linear(vis, 4 * vis)
            self.fc2 = nn.Linear(4 * vis, llm)
            self.fc3 = nn.Linear(llm, llm)
        elif self.kind == "gelu-mlp":
            self.fc1 = nn.Linear(vis, llm)
            self.fc2 = nn.Linear(llm, llm)
        else:
            self.fc1 = nn.Linear(vis, llm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return self.fc1(x)
        x = self.fc2(F.gelu(self.fc1(x)))
        return self.fc3(F.gelu(x)) if self.kind == "fused-gelu-mlp" else x


def instruction_embedding(text: torch.Tensor, attention_mask: torch.Tensor | None,
                          slots: torch.Tensor | None) -> torch.Tensor:
    """FiLM's language input: the mean input embedding (B, H) over each row's tokens but its action slots and padding.

    OpenVLA-OFT averages the embeddings of every non-action position; robosteer also leaves out the right
    padding, so a row's conditioning does not depend on the batch it is in.
    """
    keep = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    if attention_mask is not None:
        keep &= attention_mask.bool()
    if slots is not None:
        keep &= ~slots
    weights = keep.to(text.dtype)[..., None]
    return (text * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


@dataclass
class VLAOutput:
    """What ``OpenVLA.forward`` returns: logits over the multimodal sequence, loss when labels are given."""

    logits: torch.Tensor  # (B, S, V) with S = 1 + n_views * n_patches [+ 1 proprio] + (L - 1)
    loss: torch.Tensor | None = None
    past_key_values: Any = None
    hidden_states: Any = None  # HF hidden_states (embeddings, each layer, the last after the final norm) if asked


def build_llama_config(cfg: VLAConfig) -> LlamaConfig:
    kw = cfg.llama_kwargs()
    rope_theta = kw.pop("rope_theta")
    rope_scaling = kw.pop("rope_scaling")
    if rope_scaling:
        raise ValueError(f"rope_scaling {rope_scaling} is not supported by robosteer yet")
    kw.pop("model_type", None)
    llama = LlamaConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)})
    llama._attn_implementation = "sdpa"  # what the OpenVLA reference ran; hooks may switch a layer to eager
    return llama


class OpenVLA(FamilyModelMixin, HookedModelMixin, nn.Module):
    """The model. Build with :func:`robosteer.load_vla` or :func:`robosteer.build_vla_from_config`.

    Every attention head is a hook site (``vla.hooks``, ``vla.run_with_cache``; see ``robosteer.hooks``).
    Its family-specific facts (where each tower's attention lives, which modules never run) come from
    ``vla.family`` (``models/families``).
    """

    family: Family = get_family("openvla")

    def __init__(self, config: VLAConfig, tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = VisionBackbone(config)
        self.projector = Projector(config)
        self.language_model = LlamaForCausalLM(build_llama_config(config))
        if config.proprio_dim:
            self.proprio_projector = (ProprioProjector(config.llm_dim, config.proprio_dim)
                                      if config.proprio_projector == "mlp" else nn.Linear(config.proprio_dim, config.llm_dim))
        if config.action_head == "l1-regression":
            self.action_head = L1RegressionActionHead(config.llm_dim, config.action_dim, config.action_chunk,
                                                      config.action_head_blocks)
        self.processor = ImageProcessor.from_config(config)
        self.action_tokenizer = ActionTokenizer(config.action_vocab_end, config.n_action_bins)
        self.tokenizer = tokenizer

    # --- structure ------------------------------------------------------------------------
    @property
    def n_prefix(self) -> int:
        """Positions before the first text token after BOS: BOS + patches of every view (+ proprio)."""
        return 1 + self.config.n_views * self.config.n_patches + int(self.config.proprio_dim > 0)

    @property
    def n_action_slots(self) -> int:
        """K*A: the empty action positions of a parallel-decoding model (0 for a token model)."""
        return self.config.action_chunk * self.config.action_dim if self.config.parallel_decoding else 0

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.language_model.lm_head.weight.device

    # --- inputs ---------------------------------------------------------------------------
    def preprocess(self, images: Any) -> torch.Tensor:
        """``vla.preprocess(images)`` -> ``pixel_values`` (B, 3 * n_towers * n_views, S, S) float32.

        With ``n_views > 1`` each observation is a sequence of ``n_views`` images (or a (V, H, W, 3) array).
        """
        if self.config.n_views > 1:
            return preprocess_views(self.processor, images, self.config.n_views)
        return self.processor(images)

    def prompt(self, instruction: str) -> str:
        return PROMPT_TEMPLATE.format(instruction=instruction.lower().strip().rstrip("?."))

    def tokenize(self, instruction: str) -> torch.Tensor:
        """Prompt ids (1, L) for an instruction, with OpenVLA's trailing token appended."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass input_ids instead of an instruction")
        ids = self.tokenizer(self.prompt(instruction), add_special_tokens=True)["input_ids"]
        return self.with_prompt_suffix(torch.tensor([ids], dtype=torch.long))

    def with_prompt_suffix(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Append OpenVLA's trailing token (Llama-2's 29871) if the prompt does not end with it."""
        suffix = self.config.prompt_suffix_token_id
        if suffix is None or bool((input_ids[:, -1] == suffix).all()):
            return input_ids
        pad = torch.full((input_ids.shape[0], 1), suffix, dtype=input_ids.dtype, device=input_ids.device)
        return torch.cat([input_ids, pad], dim=1)

    def _check_pixels(self, pixel_values: torch.Tensor) -> None:
        n = 3 * len(self.config.towers) * self.config.n_views
        s = self.config.image_size
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (n, s, s):
            got = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must have shape (B, {n}, {s}, {s}) (use vla.preprocess(images)); got {got}")
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be floating point (use vla.preprocess(images)); got {pixel_values.dtype}")

    def normalize_proprio(self, proprio: Any, unnorm_key: str | None = None) -> torch.Tensor:
        """Raw proprio (B, P) -> [-1, 1] with the dataset's q01/q99 (all dims; OFT's rule and mask when set)."""
        stats = dict(self.norm_stats(unnorm_key)["proprio"])
        try:
            arr = np.atleast_2d(np.asarray(proprio.detach().cpu().numpy() if isinstance(proprio, torch.Tensor)
                                           else proprio, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise ValueError(f"proprio must be numbers, (P,) or (B, P); got {type(proprio).__name__} ({err})") from None
        expected = self.config.proprio_dim or len(stats["q01"])
        if arr.ndim != 2 or arr.shape[1] != expected or len(stats["q01"]) != expected:
            raise ValueError(f"proprio must have shape ({expected},) or (B, {expected}): this model's proprio_dim is "
                             f"{self.config.proprio_dim} and its norm_stats proprio has {len(stats['q01'])} dims; "
                             f"got shape {tuple(np.shape(proprio))}")
        if self.config.normalization != "openvla":
            return torch.as_tensor(oft_normalize(arr, stats, self.config.normalization), dtype=torch.float32)
        stats["mask"] = [True] * len(stats["q01"])
        return torch.as_tensor(normalize(arr, stats), dtype=torch.float32)

    # --- forward --------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
              attention_mask: torch.Tensor | None = None, proprio: torch.Tensor | None = None):
        """Multimodal input embeddings and attention mask: BOS, patches, [proprio], then the text."""
        self._check_pixels(pixel_values)
        if input_ids.ndim != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must have shape (B, L) with L >= 1, got {tuple(input_ids.shape)}")
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(f"batch sizes differ: pixel_values {pixel_values.shape[0]} vs input_ids {input_ids.shape[0]}")
        vis_dtype = self.projector.fc1.weight.dtype
        text = self.language_model.get_input_embeddings()(input_ids)  # (B, L, H)
        slots = action_slot_mask(input_ids, attention_mask, self.n_action_slots) if self.config.parallel_decoding else None
        language = instruction_embedding(text, attention_mask, slots).to(vis_dtype) if self.config.use_film else None
        patches = self.projector(self.vision_backbone(pixel_values.to(vis_dtype), language))  # (B, N, H)
        if slots is not None:  # OFT: the action slots are exact zero vectors
            text = text * ~slots[..., None]
        parts = [text[:, :1], patches.to(text.dtype)]
        if self.config.proprio_dim:
            if proprio is None:
                raise ValueError(f"this model takes a proprio input of {self.config.proprio_dim} dims (normalised)")
            if proprio.numel() != text.shape[0] * self.config.proprio_dim:
                raise ValueError(f"proprio must be normalised (B, {self.config.proprio_dim}) with B = {text.shape[0]}, "
                                 f"got shape {tuple(proprio.shape)}")
            parts.append(self.proprio_projector(proprio.to(text.dtype).reshape(text.shape[0], 1, -1)))
        parts.append(text[:, 1:])
        embeds = torch.cat(parts, dim=1)
        if attention_mask is not None:
            extra = torch.ones(attention_mask.shape[0], self.n_prefix - 1, dtype=attention_mask.dtype,
                               device=attention_mask.device)
            attention_mask = torch.cat([attention_mask[:, :1], extra, attention_mask[:, 1:]], dim=1)
        return embeds, attention_mask

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, proprio: torch.Tensor | None = None,
                use_cache: bool = False, logits_to_keep: int = 0, output_hidden_states: bool = False) -> VLAOutput:
        """``vla(input_ids=..., pixel_values=...)`` -> logits over BOS, the patches and the text.

        With ``labels`` (B, L) aligned to ``input_ids`` (``IGNORE_INDEX`` where no loss), the loss is
        next-token cross-entropy over the text part, as OpenVLA trains. A parallel-decoding model takes
        each row as prompt + K*A action slots + stop token (right-padded) and attends bidirectionally.
        """
        embeds, mask = self.embed(input_ids, pixel_values, attention_mask, proprio)
        extra = {"output_hidden_states": True} if output_hidden_states else {}
        if self.config.parallel_decoding:
            if use_cache:
                raise ValueError("a parallel-decoding model decodes its action chunk in one pass (use_cache=False)")
            mask = bidirectional_mask(mask, embeds.shape[0], embeds.shape[1], embeds.dtype, embeds.device)
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=use_cache,
                                  logits_to_keep=logits_to_keep, **extra)
        loss = None
        if labels is not None:
            full = torch.full((labels.shape[0], self.n_prefix - 1), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
            full = torch.cat([labels[:, :1], full, labels[:, 1:]], dim=1)
            logits = out.logits[:, :-1].float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), full[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
        return VLAOutput(logits=out.logits, loss=loss, past_key_values=getattr(out, cache_name()) if use_cache else None,
                         hidden_states=out.hidden_states if output_hidden_states else None)

    # --- actions --------------------------------------------------------------------------
    def norm_stats(self, unnorm_key: str | None = None) -> dict:
        stats = self.config.norm_stats
        if not stats:
            raise ValueError("this model has no dataset statistics (norm_stats); cannot un-normalise actions")
        if unnorm_key is None:
            if len(stats) > 1:
                raise ValueError(f"this model was trained on {len(stats)} datasets; pass unnorm_key= one of {sorted(stats)}")
            unnorm_key = next(iter(stats))
        if unnorm_key not in stats:
            raise ValueError(f"unknown unnorm_key {unnorm_key!r}; valid keys: {sorted(stats)}")
        return stats[unnorm_key]

    @torch.no_grad()
    def predict_action(self, image: Any = None, instruction: str | None = None, *, input_ids: torch.Tensor | None = None,
                       pixel_values: torch.Tensor | None = None, proprio: Any = None, unnorm_key: str | None = None,
                       return_tokens: bool = False, use_cache: bool = True):
        """``vla.predict_action(image, "pick up the red cube")`` -> un-normalised action (A,) float64.

        Greedy decoding of one action token per action dimension. With ``use_cache`` the first step
        runs the whole multimodal prefix and later steps reuse its KV cache. Batched images give (B, A).
        ``input_ids`` lets callers without a tokenizer pass prompt ids; ``return_tokens`` also returns
        the generated ids. A regression-head model returns its chunk (K, A) (batched: (B, K, A)),
        decoded in one pass (see :meth:`predict_chunk`).
        """
        from .generation import greedy_action_tokens

        stats = self.norm_stats(unnorm_key)
        input_ids, pixel_values, prop = self.action_inputs(image, instruction, input_ids=input_ids,
                                                           pixel_values=pixel_values, proprio=proprio,
                                                           unnorm_key=unnorm_key)
        if self.config.parallel_decoding:
            if return_tokens:
                raise ValueError("return_tokens: a regression-head model predicts continuous actions, not tokens")
            chunk = predict_chunk(self, input_ids, pixel_values, prop, stats["action"]).actions
            return chunk[0] if chunk.shape[0] == 1 else chunk
        tokens = greedy_action_tokens(self, input_ids, pixel_values, len(stats["action"]["q01"]),
                                      proprio=prop, use_cache=use_cache)
        actions = unnormalize(self.action_tokenizer.decode(tokens), stats["action"])
        single = actions.shape[0] == 1
        actions = actions[0] if single else actions
        if return_tokens:
            return actions, (tokens[0] if single else tokens)
        return actions

    def action_inputs(self, image: Any = None, instruction: str | None = None, *, input_ids: Any = None,
                      pixel_values: torch.Tensor | None = None, proprio: Any = None, unnorm_key: str | None = None,
                      caller: str = "predict_action") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What ``predict_action`` feeds the model: ``(input_ids (B, L), pixel_values, normalised proprio or None)``,
        on the model's device, prompt suffix appended, one prompt repeated over a batch of images."""
        if pixel_values is None:
            if image is None:
                raise ValueError(f"{caller} needs an image (or pixel_values)")
            pixel_values = self.preprocess(image)
        if input_ids is None:
            if instruction is None:
                raise ValueError(f"{caller} needs an instruction (or input_ids)")
            input_ids = self.tokenize(instruction)
        input_ids = torch.as_tensor(input_ids, dtype=torch.long)
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        input_ids = self.with_prompt_suffix(input_ids).to(self.device)
        if input_ids.shape[0] == 1 and pixel_values.shape[0] > 1:
            input_ids = input_ids.expand(pixel_values.shape[0], -1)
        prop = None
        if self.config.proprio_dim:
            if proprio is None:
                raise ValueError(f"this model needs proprio= ({self.config.proprio_dim} dims, raw robot state)")
            prop = self.normalize_proprio(proprio, unnorm_key).to(self.device)
        return input_ids, pixel_values.to(self.device), prop

    def explain(self, observation: Any, instruction: str | None = None, **options: Any):
        """``vla.explain(image, "pick up the red cube")`` -> ``Explanation``: each LLM head's direct effect on the
        action, attention maps, ablations, adapter deltas (see :func:`robosteer.explanation.explain`)."""
        from ..explanation.api import explain

        return explain(self, observation, instruction, **options)

    @torch.no_grad()
    def predict_chunk(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, proprio: torch.Tensor | None = None,
                      unnorm_key: str | None = None) -> ChunkPrediction:
        """Prompt ids (B, L) (suffix token included), ``pixel_values`` and *normalised* proprio -> the chunk:
        ``ChunkPrediction(actions (B, K, A) float64, normalized (B, K, A), hidden (B, K*A, D))``."""
        return predict_chunk(self, input_ids, pixel_values, proprio, self.norm_stats(unnorm_key)["action"])

    # --- files ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, max_shard_size: int = 5 * 2**30) -> Path:
        """Write the checkpoint in OpenVLA's HF format (config, safetensors, statistics, tokenizer), atomically."""
        return save_vla(self, directory, max_shard_size=max_shard_size)

"""pi0 (Physical Intelligence; lerobot's PyTorch port) as a robosteer model: every head of every tower a site.

The network is lerobot's ``PI0Pytorch`` computed natively, module for module under the checkpoint's
names (``model.paligemma_with_expert.paligemma.model.language_model.layers.3.self_attn.o_proj``):

- **prefix** ``[camera 0 patches | camera 1 ... | language tokens padded right]``: SigLIP (after
  ``post_layernorm``) -> projector for each camera (an empty camera is an all -1 image, masked out);
  ``embed_tokens[ids] * sqrt(width)``; fully bidirectional among valid tokens; positions
  ``cumsum(valid) - 1``. The VLM runs once and keeps every layer's K (after RoPE) and V.
- **suffix** ``[state token | chunk action tokens]`` through the action expert, which attends to
  ``[prefix K/V ; suffix K/V]``; the state token is its own block, the action tokens see each other;
  positions continue from the number of valid prefix tokens.
- **sampler**: Euler from t=1 (noise) to t=0 in ``num_inference_steps`` steps; the chunk's first
  ``action_dim`` columns are un-normalised with the postprocessor's statistics.
- **training**: the flow-matching loss ``mse(noise - actions, v(t*noise + (1-t)*actions, t))``. The
  reference's joint prefix+suffix forward equals this cached path (the prefix never sees the suffix).

Usage::

    pi0 = robosteer.load_vla("checkpoints/pi0_base")          # a lerobot pi0 folder
    chunk = pi0.predict_action_chunk(images={"base_0_rgb": u8}, state=state, instruction="pick up the cube")
    out, cache = pi0.run_with_cache(images=..., state=..., input_ids=ids, attention_mask=mask)
    cache["llm.blocks.3.attn.hook_z"]                         # [B, prefix, 8, head_dim]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ...hooks import HookedModelMixin
from ..families import Family, FamilyModelMixin, get_family
from .config import IMAGE_PREFIX, Pi0Config
from .gemma import GemmaStack, additive_mask
from .processor import Pi0Normalizer, prepare_image, tokenize
from .siglip import SiglipVisionModel


def _container(**modules: nn.Module) -> nn.Module:
    node = nn.Module()
    for name, module in modules.items():
        setattr(node, name, module)
    return node


def _linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return module(x.to(module.weight.dtype))


def make_att_2d_masks(pad: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """big_vision's rule: j is visible from i iff ``cumsum(att)[j] <= cumsum(att)[i]`` and both are valid."""
    cumsum = torch.cumsum(att, dim=1)
    return (cumsum[:, None, :] <= cumsum[:, :, None]) & (pad[:, None, :] & pad[:, :, None])


def time_embedding(t: torch.Tensor, width: int, min_period: float, max_period: float) -> torch.Tensor:
    """openpi's sine-cosine embedding of the flow time, computed in float64 and cast to ``t``'s dtype."""
    dtype = torch.float32 if t.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    x = t[:, None] * (1.0 / period * 2 * math.pi)
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1).to(t.dtype)


class Pi0Network(nn.Module):
    """lerobot's ``PI0Pytorch``: the parameters under the checkpoint's names (``model.`` in the file)."""

    def __init__(self, cfg: Pi0Config) -> None:
        super().__init__()
        vlm, expert = cfg.vlm, cfg.expert
        paligemma = _container(
            model=_container(
                vision_tower=_container(vision_model=SiglipVisionModel(cfg.vision)),
                multi_modal_projector=_container(linear=nn.Linear(cfg.vision.width, vlm.width)),
                language_model=GemmaStack(vlm, cfg.vocab_size),
            ),
            lm_head=nn.Linear(vlm.width, cfg.vocab_size, bias=False),
        )
        gemma_expert = _container(model=GemmaStack(expert), lm_head=nn.Linear(expert.width, cfg.vocab_size, bias=False))
        self.paligemma_with_expert = _container(paligemma=paligemma, gemma_expert=gemma_expert)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, expert.width)
        self.action_out_proj = nn.Linear(expert.width, cfg.max_action_dim)
        self.state_proj = nn.Linear(cfg.max_state_dim, expert.width)
        self.action_time_mlp_in = nn.Linear(2 * expert.width, expert.width)
        self.action_time_mlp_out = nn.Linear(expert.width, expert.width)


@dataclass
class Pi0Inputs:
    """One batch in model space: pixels and masks per camera (config order, empty ones last), ids, padded state."""

    pixels: list[torch.Tensor]
    image_masks: list[torch.Tensor]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    state: torch.Tensor  # normalised, zero-padded to max_state_dim

    @property
    def batch_size(self) -> int:
        return self.state.shape[0]

    def to(self, device: Any) -> "Pi0Inputs":
        return Pi0Inputs([p.to(device) for p in self.pixels], [m.to(device) for m in self.image_masks],
                         self.input_ids.to(device), self.attention_mask.to(device), self.state.to(device))

    def expand(self, n: int) -> "Pi0Inputs":
        """A batch of one as ``n`` identical rows (views, no copy): one copy per patched head."""
        if self.batch_size != 1:
            raise ValueError(f"expand repeats a batch of one; this batch has {self.batch_size} rows")

        def rows(x: torch.Tensor) -> torch.Tensor:
            return x.expand(n, *x.shape[1:])
        return Pi0Inputs([rows(p) for p in self.pixels], [rows(m) for m in self.image_masks], rows(self.input_ids),
                         rows(self.attention_mask), rows(self.state))


@dataclass
class Pi0Prefix:
    """The VLM's run over the prefix: embeddings, masks, positions, final hidden and per-layer K/V."""

    embeds: torch.Tensor
    pad_mask: torch.Tensor
    positions: torch.Tensor
    hidden: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Pi0Output:
    """``actions``: un-normalised ``[B, chunk, action_dim]`` (sampling); ``velocity``: one ``v_t`` (``x_t``/``time``
    given); ``losses``: the training loss terms (model-space ``actions``, ``noise`` and ``time`` given)."""

    actions: torch.Tensor | None = None
    actions_model: torch.Tensor | None = None
    velocity: torch.Tensor | None = None
    losses: torch.Tensor | None = None  # elementwise flow loss [B, chunk, max_action_dim] (``actions=`` given)
    # with ``velocity``: the one-step estimate of the clean chunk, ``x_t - time * v`` (model space)
    denoised: torch.Tensor | None = None


class Pi0Policy(FamilyModelMixin, HookedModelMixin, nn.Module):
    """pi0 with robosteer's hook layer. Build with ``robosteer.load_vla(folder)`` or ``models.pi0.build_pi0``."""

    family: Family = get_family("pi0")

    def __init__(self, config: Pi0Config, tokenizer: Any = None, normalizer: Pi0Normalizer | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = Pi0Network(config)
        self.tokenizer = tokenizer
        self.normalizer = normalizer or Pi0Normalizer.identity()
        self.source: str | None = None

    # --- structure ------------------------------------------------------------------------
    @property
    def vlm(self) -> GemmaStack:
        return self.model.paligemma_with_expert.paligemma.model.language_model

    @property
    def expert(self) -> GemmaStack:
        return self.model.paligemma_with_expert.gemma_expert.model

    @property
    def vision(self) -> SiglipVisionModel:
        return self.model.paligemma_with_expert.paligemma.model.vision_tower.vision_model

    @property
    def projector(self) -> nn.Linear:
        return self.model.paligemma_with_expert.paligemma.model.multi_modal_projector.linear

    @property
    def dtype(self) -> torch.dtype:
        return self.vlm.layers[0].self_attn.q_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.action_out_proj.weight.device

    def save_pretrained(self, directory) -> "Path":
        """Write a lerobot pi0 folder (``models.pi0.saving.save_pi0``) that ``robosteer.load_vla`` reads back."""
        from .saving import save_pi0

        return save_pi0(self, directory)

    # --- inputs ---------------------------------------------------------------------------
    def _camera_key(self, key: str) -> str:
        full = key if key.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + key
        if full not in self.config.image_keys:
            raise ValueError(f"camera {key!r} is not declared by this pi0 config; its cameras are "
                             f"{list(self.config.camera_names)} (config.json input_features)")
        return full

    def prepare_images(self, images: Mapping[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``{camera: uint8 [B, H, W, 3]}`` -> pixels and masks, given cameras in config order, then the empty ones."""
        if not isinstance(images, Mapping) or not images:
            raise ValueError(f"images must be a dict {{camera: uint8 [B, H, W, 3]}} with at least one of "
                             f"{list(self.config.camera_names)}")
        given = {self._camera_key(k): v for k, v in images.items()}
        size = self.config.vision.image_size
        pixels, masks = [], []
        for key in self.config.image_keys:
            if key in given:
                pixels.append(prepare_image(given[key], size, where=f"images[{key!r}]").to(self.device))
                masks.append(torch.ones(pixels[-1].shape[0], dtype=torch.bool, device=self.device))
        for key in self.config.image_keys:
            if key not in given:  # lerobot: an all -1 image with a False mask
                pixels.append(torch.full_like(pixels[-1], -1.0))
                masks.append(torch.zeros_like(masks[-1]))
        return pixels, masks

    def prepare_state(self, state: Any) -> torch.Tensor:
        """Raw ``[B, state_dim]`` -> normalised and zero-padded to ``max_state_dim``."""
        x = torch.as_tensor(state, dtype=torch.float32, device=self.device)
        if x.ndim != 2 or x.shape[1] != self.config.state_dim:
            raise ValueError(f"state must be [B, {self.config.state_dim}] (config.json input_features."
                             f"observation.state), got shape {tuple(x.shape)}")
        x = self.normalizer.state.forward(x)
        return torch.nn.functional.pad(x, (0, self.config.max_state_dim - x.shape[1]))

    def prepare_inputs(self, images: Mapping[str, Any], state: Any, input_ids: Any = None, attention_mask: Any = None,
                       instruction: str | list[str] | None = None) -> Pi0Inputs:
        """Everything the network takes, with batch sizes checked against each other."""
        pixels, masks = self.prepare_images(images)
        padded = self.prepare_state(state)
        batch = padded.shape[0]
        if input_ids is None:
            if instruction is None:
                raise ValueError("pass instruction= (with the folder's tokenizer) or input_ids= and attention_mask=")
            texts = [instruction] * batch if isinstance(instruction, str) else list(instruction)
            input_ids, attention_mask = tokenize(self.tokenizer, texts, self.config.tokenizer_max_length)
        ids = torch.as_tensor(input_ids, device=self.device).long()
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else \
            torch.as_tensor(attention_mask, device=self.device).bool()
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"input_ids and attention_mask must both be [B, T], got {tuple(ids.shape)} and {tuple(mask.shape)}")
        sizes = {"state": batch, "input_ids": ids.shape[0], **{f"camera {i}": p.shape[0] for i, p in enumerate(pixels)}}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"batch sizes differ: {sizes}")
        return Pi0Inputs(pixels, masks, ids, mask, padded)

    # --- the network ----------------------------------------------------------------------
    def embed_prefix(self, inputs: Pi0Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ``(embeds [B, P, W], valid [B, P])``; image tokens are not rescaled, language tokens are."""
        # SigLIP runs once over every camera, observation-major (row b * n_cameras + c), so a siglip site sees
        # all cameras in one call; then each camera's tokens take their place in the prefix.
        B, C = inputs.batch_size, len(inputs.pixels)
        pixels = torch.stack(inputs.pixels, dim=1).flatten(0, 1)
        features = _linear(self.projector, self.vision(pixels.to(self.vision.embeddings.patch_embedding.weight.dtype)))
        features = features.view(B, C, *features.shape[1:])
        embeds = [features[:, c] for c in range(C)]
        lang = self.vlm.embed(inputs.input_ids)
        embeds.append(lang)
        return torch.cat([e.to(lang.dtype) for e in embeds], dim=1), self.prefix_mask(inputs)

    def prefix_mask(self, inputs: Pi0Inputs) -> torch.Tensor:
        """Which prefix positions are real ``[B, P]``: each camera's patches (False for an empty camera), then the
        language tokens' attention mask."""
        n = self.config.vision.n_patches
        return torch.cat([m[:, None].expand(-1, n) for m in inputs.image_masks] + [inputs.attention_mask], dim=1)

    def run_prefix(self, inputs: Pi0Inputs) -> Pi0Prefix:
        """The VLM over the prefix (prefix-LM: bidirectional among valid tokens); keeps each layer's K/V."""
        embeds, valid = self.embed_prefix(inputs)
        positions = torch.cumsum(valid, dim=1) - 1
        allowed = make_att_2d_masks(valid, torch.zeros_like(valid, dtype=torch.long))
        hidden, kv = self.vlm(embeds, positions, additive_mask(allowed))
        return Pi0Prefix(embeds, valid, positions, hidden, kv)

    def embed_suffix(self, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``[state token | action tokens]``: ``state_proj(state)``; ``mlp_out(silu(mlp_in([action_in(x_t), time])))``."""
        net = self.model
        state_token = _linear(net.state_proj, state)[:, None]
        actions = _linear(net.action_in_proj, x_t)
        time = time_embedding(t, net.action_in_proj.out_features, self.config.min_period, self.config.max_period)
        fused = torch.cat([actions, time[:, None].expand_as(actions).to(actions.dtype)], dim=2)
        fused = _linear(net.action_time_mlp_out, torch.nn.functional.silu(_linear(net.action_time_mlp_in, fused)))
        return torch.cat([state_token, fused.to(state_token.dtype)], dim=1)

    def velocity(self, state: torch.Tensor, prefix: Pi0Prefix, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One evaluation of the flow ``v(x_t, t)`` ``[B, chunk, max_action_dim]`` (float32) on a cached prefix."""
        suffix = self.embed_suffix(state, x_t, t)
        B, S = suffix.shape[:2]
        att = torch.zeros(B, S, dtype=torch.long, device=suffix.device)
        att[:, :2] = 1  # the state token is its own block; the action tokens are one block
        own = make_att_2d_masks(torch.ones(B, S, dtype=torch.bool, device=suffix.device), att)
        allowed = torch.cat([prefix.pad_mask[:, None, :].expand(B, S, -1), own], dim=2)
        positions = prefix.pad_mask.sum(dim=-1, keepdim=True) + torch.arange(S, device=suffix.device)
        hidden, _ = self.expert(suffix, positions, additive_mask(allowed), past=prefix.kv)
        out = hidden[:, -self.config.chunk_size:].to(torch.float32)
        return _linear(self.model.action_out_proj, out).to(torch.float32)

    def noise_like(self, batch: int, seed: int = 0) -> torch.Tensor:
        """Standard-normal ``[B, chunk, max_action_dim]`` from a generator seeded with ``seed``."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        shape = (batch, self.config.chunk_size, self.config.max_action_dim)
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(self.device)

    def sample(self, inputs: Pi0Inputs, noise: torch.Tensor, num_steps: int | None = None) -> torch.Tensor:
        """Euler from t=1 to 0: ``x <- x + dt * v(x, 1 + i*dt)``, ``dt = -1/steps`` -> model-space chunk."""
        steps = num_steps or self.config.num_inference_steps
        prefix = self.run_prefix(inputs)
        dt = -1.0 / steps
        x = noise.to(torch.float32)
        for i in range(steps):
            t = torch.tensor(1.0 + i * dt, dtype=torch.float32, device=x.device).expand(x.shape[0])
            x = x + dt * self.velocity(inputs.state, prefix, x, t)
        return x

    def _check_noise(self, noise: Any, batch: int) -> torch.Tensor:
        x = torch.as_tensor(noise, dtype=torch.float32, device=self.device)
        want = (batch, self.config.chunk_size, self.config.max_action_dim)
        if tuple(x.shape) != want:
            raise ValueError(f"noise must be [B, chunk, max_action_dim] = {list(want)}, got {list(x.shape)}")
        return x

    # --- public calls ---------------------------------------------------------------------
    def forward(self, images: Mapping[str, Any] | None = None, state: Any = None, input_ids: Any = None,
                attention_mask: Any = None, instruction: str | list[str] | None = None, noise: Any = None,
                seed: int = 0, num_steps: int | None = None, x_t: Any = None, time: Any = None,
                inputs: Pi0Inputs | None = None, actions: torch.Tensor | None = None) -> Pi0Output:
        """Sample a chunk (``Pi0Output.actions``), or with ``x_t`` and ``time`` one velocity (``.velocity``), or
        with model-space ``actions``, ``noise`` and ``time`` the flow-matching loss terms (``.losses``).

        The hook layer calls this: ``run_with_cache`` / ``run_with_hooks`` take these keywords. While
        sampling, an expert site fires once per Euler step (a cache keeps the last step's value);
        ``x_t=``/``time=`` read a single step. ``inputs`` (a prepared :class:`Pi0Inputs`) replaces
        ``images``/``state``/ids (the trainer's batches).
        """
        if inputs is None:
            inputs = self.prepare_inputs(images, state, input_ids, attention_mask, instruction)
        if actions is not None:
            if noise is None or time is None:
                raise ValueError("training needs noise= and time= with actions=")
            t = torch.as_tensor(time, dtype=torch.float32, device=self.device).reshape(-1)
            return Pi0Output(losses=self.flow_losses(inputs, actions, self._check_noise(noise, inputs.batch_size), t))
        if x_t is not None or time is not None:
            if x_t is None or time is None:
                raise ValueError("pass both x_t= [B, chunk, max_action_dim] and time= [B] for one velocity")
            t = torch.as_tensor(time, dtype=torch.float32, device=self.device).reshape(-1).expand(inputs.batch_size)
            x = self._check_noise(x_t, inputs.batch_size)
            v = self.velocity(inputs.state, self.run_prefix(inputs), x, t)
            return Pi0Output(velocity=v, denoised=x - t[:, None, None] * v)
        start = self.noise_like(inputs.batch_size, seed) if noise is None else self._check_noise(noise, inputs.batch_size)
        model_space = self.sample(inputs, start, num_steps)
        actions = self.normalizer.action.inverse(model_space[..., : self.config.action_dim])
        return Pi0Output(actions=actions, actions_model=model_space)

    @torch.no_grad()
    def predict_action_chunk(self, images: Mapping[str, Any] | None = None, state: Any = None, *, input_ids: Any = None,
                             attention_mask: Any = None, instruction: str | list[str] | None = None, noise: Any = None,
                             seed: int = 0, num_steps: int | None = None) -> torch.Tensor:
        """Un-normalised action chunk ``[B, chunk, action_dim]`` (float32); ``noise`` fixed when given, seeded otherwise."""
        return self(images=images, state=state, input_ids=input_ids, attention_mask=attention_mask,
                    instruction=instruction, noise=noise, seed=seed, num_steps=num_steps).actions

    def flow_losses(self, inputs: Pi0Inputs, actions: torch.Tensor, noise: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """lerobot's ``PI0Pytorch.forward``: elementwise ``mse(noise - actions, v_t)`` ``[B, chunk, max_action_dim]``.

        ``actions`` are in model space (normalised, zero-padded); ``x_t = t * noise + (1 - t) * actions``.
        """
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        v = self.velocity(inputs.state, self.run_prefix(inputs), x_t, time)
        return torch.nn.functional.mse_loss(noise - actions, v, reduction="none")

    def sample_time(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """openpi's flow time: ``Beta(1.5, 1) * 0.999 + 0.001`` (the config's values)."""
        cfg = self.config
        dist = torch.distributions.Beta(torch.tensor(cfg.time_beta_alpha), torch.tensor(cfg.time_beta_beta))
        if generator is None:
            sample = dist.sample((batch,))
        else:  # Beta through two Gammas, so a generator makes it reproducible
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
                sample = dist.sample((batch,))
        return (sample * cfg.time_scale + cfg.time_offset).to(torch.float32).to(self.device)

    def loss(self, images: Mapping[str, Any], state: Any, actions: Any, *, input_ids: Any = None,
             attention_mask: Any = None, instruction: str | list[str] | None = None, noise: Any = None,
             time: Any = None, seed: int = 0) -> torch.Tensor:
        """The training loss on raw ``actions [B, chunk, action_dim]``: normalised, padded, mean over the real dims."""
        inputs = self.prepare_inputs(images, state, input_ids, attention_mask, instruction)
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        want = (inputs.batch_size, self.config.chunk_size, self.config.action_dim)
        if tuple(a.shape) != want:
            raise ValueError(f"actions must be [B, chunk, action_dim] = {list(want)}, got {list(a.shape)}")
        a = torch.nn.functional.pad(self.normalizer.action.forward(a), (0, self.config.max_action_dim - a.shape[-1]))
        gen = torch.Generator().manual_seed(seed)
        noise = self.noise_like(inputs.batch_size, seed) if noise is None else self._check_noise(noise, inputs.batch_size)
        t = self.sample_time(inputs.batch_size, gen) if time is None else \
            torch.as_tensor(time, dtype=torch.float32, device=self.device).reshape(-1)
        return self.flow_losses(inputs, a, noise, t)[..., : self.config.action_dim].mean()

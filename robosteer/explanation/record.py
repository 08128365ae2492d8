"""The runs behind an explanation: one hooked pass that records what the readout needs, and intervened passes.

A *pass* is what ``predict_action`` costs: for a token model the cached greedy decode (one forward over
the multimodal prefix, then A - 1 one-token steps through the LLM, ``models.generation``); for a
regression-head model one bidirectional forward over prompt + action slots (``models.action_heads``).

The *read positions* are where the action is read from the final residual stream: for a token model
position ``S0 - 1 + j`` predicts action token j (``S0`` = BOS + patches [+ proprio] + the prompt's text);
for a regression head the K*A positions ``[S0 - 1, S0 - 1 + K*A)`` that the head reads (OFT's shift).
Both are ``S0 - 1 + arange(P)``. The recording hooks (``vla.hooks``, so they go away on exit) keep only
those rows, so a 7B model's trace stays small. Each hook counts the calls it has seen, which tells it
which global positions the current call covers (the prefix, then one position per decoding step).

Usage::

    inputs = ActionInputs.build(vla, image, "pick up the red cube")
    trace, action = record(vla, inputs)                  # Trace: z, resid, patterns, logits at the read positions
    *_, ablated = intervene(vla, inputs, ablate_heads(heads))  # the action with the heads zeroed, (K, A)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..interventions import group_by_site, head_slice_hooks
from ..models.action_heads import predict_chunk
from ..models.action_tokenizer import unnormalize
from ..models.generation import decode_action_tokens
from ..sites import Head, hook_name


@dataclass
class ActionInputs:
    """One observation as the model takes it, and where its action is read."""

    input_ids: torch.Tensor  # (1, L) prompt ids, suffix token appended
    pixel_values: torch.Tensor  # (1, C, S, S) on the model's device
    proprio: torch.Tensor | None  # (1, P) normalised, or None
    context: int  # S0: the context's length (BOS, patches, [proprio], the prompt's text); reads start at S0 - 1
    n_read: int  # P: A (token model) or K*A (regression head)
    tokens: bool  # token actions (greedy decode) or a regression head (one forward)
    unnorm_key: str | None = None  # which dataset statistics un-normalise the action

    @classmethod
    def build(cls, vla, image: Any, instruction: str | None, proprio: Any = None,
              unnorm_key: str | None = None) -> "ActionInputs":
        ids, pixels, prop = vla.action_inputs(image, instruction, proprio=proprio, unnorm_key=unnorm_key,
                                              caller="explain")
        if ids.shape[0] != 1:
            raise ValueError(f"explain takes one observation at a time, got a batch of {ids.shape[0]}")
        cfg = vla.config
        tokens = not cfg.parallel_decoding
        n_read = cfg.action_dim if tokens else vla.n_action_slots
        return cls(ids, pixels, prop, vla.n_prefix + ids.shape[1] - 1, n_read, tokens, unnorm_key)

    @property
    def read_positions(self) -> list[int]:
        return [self.context - 1 + i for i in range(self.n_read)]


@dataclass
class Trace:
    """What one hooked pass recorded at the read positions (float32, batch row 0)."""

    z: torch.Tensor  # (L, P, H, Dh): each LLM head's output (hook_z)
    attn_out: torch.Tensor  # (L, P, D): each layer's attention output (hook_attn_out)
    embed: torch.Tensor  # (P, D): the input of block 0 (hook_resid_pre of layer 0)
    resid_post: torch.Tensor  # (L, P, D): each block's output (hook_resid_post); the last is the final residual
    pattern: torch.Tensor  # (L, H, P, S0): attention of the read positions over the context
    z_mean: torch.Tensor  # (L, H, Dh): each head's output averaged over the context positions
    logits: torch.Tensor | None  # (P, V): token models, the logits that chose each action token
    tokens: torch.Tensor | None  # (A,): token models, the decoded tokens
    normalized: torch.Tensor | None  # (K, A): regression head, its output


class _Recorder:
    """Hook functions that keep the read rows of every call; one call counter per site."""

    def __init__(self, read: Sequence[int], context: int) -> None:
        self.read = list(read)
        self.context = context
        self.rows: dict[str, list[torch.Tensor]] = {}
        self.start: dict[str, int] = {}
        self.z_mean: dict[int, torch.Tensor] = {}

    def _span(self, name: str, length: int) -> tuple[list[int], int]:
        """Rows of this call (call-local indices) that are read positions, and the call's first global position."""
        start = self.start.get(name, 0)
        self.start[name] = start + length
        return [p - start for p in self.read if start <= p < start + length], start

    def hook(self, act: torch.Tensor, site) -> None:
        name = str(site)
        axis = 2 if site.kind == "hook_pattern" else 1
        rows, start = self._span(name, act.shape[axis])
        if site.kind == "hook_z" and start == 0:  # the prefix call: the context's mean output per head
            self.z_mean[site.layer] = act[0, : self.context].float().mean(0)  # (H, Dh)
        if not rows:
            return None
        index = torch.tensor(rows, device=act.device)
        kept = act[0].index_select(axis - 1, index).float()
        if site.kind == "hook_pattern":
            kept = kept[..., : self.context]  # (H, rows, S0)
        self.rows.setdefault(name, []).append(kept)
        return None

    def stacked(self, name: str, axis: int) -> torch.Tensor:
        return torch.cat(self.rows[name], dim=axis)


def record(vla, inputs: ActionInputs) -> tuple[Trace, np.ndarray]:
    """One hooked pass: ``(trace, action (K, A) un-normalised)``. The trace holds, at the read positions, every
    LLM head's output, the residual stream and the attention patterns."""
    n_layers = vla.head_layout.shape("llm")[0]
    recorder = _Recorder(inputs.read_positions, inputs.context)
    kinds = ("hook_z", "hook_attn_out", "hook_resid_post", "hook_pattern")
    names = [hook_name("llm", layer, kind) for layer in range(n_layers) for kind in kinds]
    names.append(hook_name("llm", 0, "hook_resid_pre"))
    with torch.no_grad(), vla.hooks(fwd_hooks=[(n, recorder.hook) for n in names]):
        logits, tokens, normalized, action = _run(vla, inputs)

    def stack(kind: str, axis: int) -> torch.Tensor:
        return torch.stack([recorder.stacked(hook_name("llm", layer, kind), axis) for layer in range(n_layers)])

    trace = Trace(z=stack("hook_z", 0), attn_out=stack("hook_attn_out", 0),
                  embed=recorder.stacked(hook_name("llm", 0, "hook_resid_pre"), 0),
                  resid_post=stack("hook_resid_post", 0), pattern=stack("hook_pattern", 1),
                  z_mean=torch.stack([recorder.z_mean[layer] for layer in range(n_layers)]),
                  logits=logits, tokens=tokens, normalized=normalized)
    return trace, action


def _run(vla, inputs: ActionInputs):
    """One pass: ``(logits (P, V) | None, tokens (A,) | None, normalised chunk (K, A) | None, action (K, A))``,
    the action un-normalised exactly as ``predict_action`` does it."""
    stats = vla.norm_stats(inputs.unnorm_key)["action"]
    if inputs.tokens:
        decoded = decode_action_tokens(vla, inputs.input_ids, inputs.pixel_values, inputs.n_read, proprio=inputs.proprio)
        action = unnormalize(vla.action_tokenizer.decode(decoded.tokens), stats)  # (1, A)
        return decoded.logits[0].float(), decoded.tokens[0], None, action
    chunk = predict_chunk(vla, inputs.input_ids, inputs.pixel_values, inputs.proprio, stats)
    return None, None, chunk.normalized[0].float(), chunk.actions[0]


def intervene(vla, inputs: ActionInputs, hooks: Sequence) -> tuple:
    """One pass with intervention hooks (no recording): ``(logits, tokens, normalised chunk, action)`` as ``_run``."""
    with torch.no_grad(), vla.hooks(fwd_hooks=list(hooks)):
        return _run(vla, inputs)


def patch_hooks(heads: Sequence[Head], source_z: torch.Tensor, read: Sequence[int]) -> list:
    """Hooks writing each LLM head's output at the read positions from ``source_z`` (L, P, H, Dh), another
    input's trace; other positions keep this run's values (the two prompts need not have one length)."""
    by_site = group_by_site(((head, head.head) for head in heads), unique=True)
    starts: dict[str, int] = {}

    def edit(out, act, site, name, idx):
        start = starts.get(name, 0)
        starts[name] = start + act.shape[1]
        for i, p in enumerate(read):
            if start <= p < start + act.shape[1]:
                out[:, p - start, idx] = source_z[site.layer, i, idx].to(device=act.device, dtype=act.dtype)
    return head_slice_hooks(by_site, edit)

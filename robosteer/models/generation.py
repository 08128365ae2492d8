"""Greedy decoding of action tokens, with and without a KV cache.

OpenVLA's remote code, on newer transformers, hands ``generate`` an empty cache on
the first step, trims the prompt to one token and silently drops the image
(openvla issue 346). Here the first step always runs the whole multimodal prefix;
with ``use_cache`` later steps feed one token embedding and reuse that step's cache.
The no-cache path recomputes everything each step (the reference for tests and
benchmarks).

``decode_action_tokens`` is the cached loop itself and also returns the logits that chose each
token (``robosteer.explanation`` reads them).

Usage::

    tokens = greedy_action_tokens(vla, input_ids, pixel_values, n_tokens=7)  # (B, 7) int64
    decoded = decode_action_tokens(vla, input_ids, pixel_values, n_tokens=7)  # .tokens (B, 7), .logits (B, 7, V)
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def cache_name() -> str:
    """The name transformers gives the KV cache, as a ``forward`` argument and an output field: ``cache``
    from 5.24 on, ``past_key_values`` before (5.24 still takes the old name but warns it goes in 5.40)."""
    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


@torch.no_grad()
def greedy_action_tokens(vla, input_ids: torch.Tensor, pixel_values: torch.Tensor, n_tokens: int,
                         proprio: torch.Tensor | None = None, use_cache: bool = True) -> torch.Tensor:
    """Generate ``n_tokens`` greedy tokens after the prompt; returns (B, n_tokens) int64."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    if use_cache:
        return decode_action_tokens(vla, input_ids, pixel_values, n_tokens, proprio=proprio).tokens
    generated: list[torch.Tensor] = []
    ids = input_ids
    for _ in range(n_tokens):
        logits = vla(input_ids=ids, pixel_values=pixel_values, proprio=proprio, logits_to_keep=1).logits
        nxt = logits[:, -1].argmax(dim=-1)
        generated.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return torch.stack(generated, dim=1).cpu()


@dataclass
class DecodedActions:
    """What ``decode_action_tokens`` returns."""

    tokens: torch.Tensor  # (B, n) int64 on the CPU: the argmax at each step
    logits: torch.Tensor  # (B, n, V) on the model's device: the logits that chose each token


@torch.no_grad()
def decode_action_tokens(vla, input_ids: torch.Tensor, pixel_values: torch.Tensor, n_tokens: int,
                         proprio: torch.Tensor | None = None) -> DecodedActions:
    """The cached greedy loop: one pass over the multimodal prefix, then ``n_tokens - 1`` one-token steps."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    out = vla(input_ids=input_ids, pixel_values=pixel_values, proprio=proprio, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1]
    chosen, logits = greedy_steps(vla, out.past_key_values, first.argmax(dim=-1), n_tokens - 1)
    return DecodedActions(tokens=torch.stack([first.argmax(dim=-1), *chosen], dim=1).cpu(),
                          logits=torch.stack([first, *logits], dim=1))


def greedy_steps(vla, past, token: torch.Tensor, n_steps: int, first_step=contextlib.nullcontext):
    """``n_steps`` one-token greedy steps from the cache ``past``, the first one fed ``token`` (B,).

    Returns the chosen tokens and their logits, ``[(B,)] * n_steps`` and ``[(B, V)] * n_steps`` (``token``
    itself not included). ``first_step()`` is entered around the first step only: e.g.
    ``lambda: vla.hooks(fwd_hooks=...)`` to intervene at ``token``'s position (``circuits.mediation``).
    """
    embed = vla.language_model.get_input_embeddings()
    chosen, logits = [token], []
    for i in range(n_steps):
        with first_step() if i == 0 else contextlib.nullcontext():
            step = vla.language_model(inputs_embeds=embed(chosen[-1][:, None]), use_cache=True, logits_to_keep=1,
                                      **{cache_name(): past})
        past = getattr(step, cache_name())
        logits.append(step.logits[:, -1])
        chosen.append(logits[-1].argmax(dim=-1))
    return chosen[1:], logits

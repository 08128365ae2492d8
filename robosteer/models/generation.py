"""Greedy decoding of action tokens, with and without a KV cache.

OpenVLA's remote code, on newer transformers, hands ``generate`` an empty cache on
the first step, trims the prompt to one token and silently drops the image
(openvla issue 346). Here the first step always runs the whole multimodal prefix;
with ``use_cache`` later steps feed one token embedding and reuse that step's cache.
The no-cache path recomputes everything each step (the reference for tests and
benchmarks).

Usage::

    tokens = greedy_action_tokens(vla, input_ids, pixel_values, n_tokens=7)  # (B, 7) int64
"""

from __future__ import annotations

import inspect
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
    generated: list[torch.Tensor] = []
    if not use_cache:
        ids = input_ids
        for _ in range(n_tokens):
            logits = vla(input_ids=ids, pixel_values=pixel_values, proprio=proprio, logits_to_keep=1).logits
            nxt = logits[:, -1].argmax(dim=-1)
            generated.append(nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
        return torch.stack(generated, dim=1).cpu()

    out = vla(input_ids=input_ids, pixel_values=pixel_values, proprio=proprio, use_cache=True, logits_to_keep=1)
    past = out.past_key_values
    nxt = out.logits[:, -1].argmax(dim=-1)
    generated.append(nxt)
    embed = vla.language_model.get_input_embeddings()
    for _ in range(n_tokens - 1):
        step = vla.language_model(inputs_embeds=embed(nxt[:, None]), use_cache=True, logits_to_keep=1,
                                  **{cache_name(): past})
        past = getattr(step, cache_name())
        nxt = step.logits[:, -1].argmax(dim=-1)
        generated.append(nxt)
    return torch.stack(generated, dim=1).cpu()

"""Exact counts of a call's model work: full-model forwards, LLM calls and backward calls.

Counts are what noise cannot move, so the cost claims of ``explain`` (docs/explain.md) are checked
by them in tests and printed beside the timings in ``benchmarks/explain_speed.py``::

    with counting(vla) as counts:
        vla.explain(image, "pick up the red cube")
    counts  # {"forward": 1, "llm": 7, "backward": 1}
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def counting(*models) -> Iterator[dict[str, int]]:
    """``{"forward": full-model forwards, "llm": LLM calls (the prefix pass and each cached step), "backward":
    autograd.grad / backward calls}``, summed over ``models``; the hooks and patches end with the block."""
    import torch

    counts = {"forward": 0, "llm": 0, "backward": 0}
    grad, backward = torch.autograd.grad, torch.autograd.backward

    def bump(key):
        def hook(*_):
            counts[key] += 1
        return hook

    def counted(fn):
        def wrapper(*args, **kwargs):
            counts["backward"] += 1
            return fn(*args, **kwargs)
        return wrapper
    handles = [h for vla in models for h in (vla.register_forward_pre_hook(bump("forward")),
                                             vla.language_model.register_forward_pre_hook(bump("llm")))]
    torch.autograd.grad, torch.autograd.backward = counted(grad), counted(backward)
    try:
        yield counts
    finally:
        torch.autograd.grad, torch.autograd.backward = grad, backward
        for handle in handles:
            handle.remove()

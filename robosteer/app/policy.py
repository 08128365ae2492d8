"""A trained VLA as a closed-loop policy: ``policy(image, instruction, proprio) -> action``.

This is the callable the sim evaluator (``robosteer evaluate --policy PATH``) and the
study run. It wraps ``vla.predict_action`` (greedy, KV-cached) and, optionally, a
heads or LoRA adapter loaded onto the base policy.

Usage::

    policy = load_policy("runs/pretrain/final")          # or "default"
    action = policy(obs.image, obs.instruction, obs.proprio)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


class VLAPolicy:
    """Closed-loop wrapper around an ``OpenVLA``; stateless between steps."""

    def __init__(self, vla, unnorm_key: str | None = None) -> None:
        self.vla = vla.eval()
        self.unnorm_key = unnorm_key

    def reset(self) -> None:
        """Called at the start of an episode (nothing to clear: the policy is Markovian)."""

    @torch.no_grad()
    def __call__(self, image: np.ndarray, instruction: str, proprio: Any = None) -> np.ndarray:
        proprio = proprio if self.vla.config.proprio_dim else None
        action = self.vla.predict_action(image, instruction, proprio=proprio, unnorm_key=self.unnorm_key)
        return np.asarray(action, dtype=np.float32)


def write_policy_file(path: str | Path, base: str | Path, adapter: str | Path | None = None) -> Path:
    """Write ``policy.json`` naming a base checkpoint and an optional adapter (paths relative to the file)."""
    from robosteer.files import atomic_write_text

    path = Path(path)
    rel = (lambda p: None if p is None else os.path.relpath(Path(p).resolve(), path.parent.resolve()))
    spec = {"format": "robosteer.app.policy", "base": str(base) if str(base) == "default" else rel(base),
            "adapter": rel(adapter)}
    return atomic_write_text(path, json.dumps(spec, indent=2))


def load_policy(path: str | Path, adapter: str | Path | None = None, unnorm_key: str | None = None) -> VLAPolicy:
    """``load_policy(checkpoint, adapter=None)``: a checkpoint folder (or ``"default"``), optionally with an
    adapter folder written by ``robosteer finetune`` (heads or LoRA), merged into the weights.

    ``path`` may also be a ``policy.json`` (``write_policy_file``) naming the base and the adapter.
    """
    from robosteer.models import load_vla

    if str(path).endswith(".json"):
        from robosteer.files import read_json

        spec = read_json(path, "policy file")
        if spec.get("format") != "robosteer.app.policy" or "base" not in spec:
            raise ValueError(f"{path} is not a robosteer policy file (needs format 'robosteer.app.policy' and 'base')")
        root = Path(path).parent
        base = spec["base"] if spec["base"] == "default" else root / spec["base"]
        path, adapter = base, (root / spec["adapter"]) if spec.get("adapter") else adapter

    vla = load_vla(path, dtype=torch.float32)
    if adapter is not None:
        from robosteer.train.adapters import load_adapter

        load_adapter(vla, adapter, merge=True)
    return VLAPolicy(vla, unnorm_key)

"""OpenVLA-architecture models: config, towers, processor, action tokens, loading.

Names load on first use, so that importing a submodule (e.g. the CLI) stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ActionTokenizer": "robosteer.models.action_tokenizer",
    "ImageProcessor": "robosteer.models.processor",
    "OpenVLA": "robosteer.models.vla",
    "VLAOutput": "robosteer.models.vla",
    "VLAConfig": "robosteer.models.config",
    "ViTConfig": "robosteer.models.config",
    "build_vla_from_config": "robosteer.models.loading",
    "load_vla": "robosteer.models.loading",
    "save_vla": "robosteer.models.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'robosteer.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

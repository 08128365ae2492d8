"""OpenVLA-architecture models: config, towers, processor, action tokens, input sequences, loading, saving.

Names load on first use, so that importing a submodule (e.g. the CLI) stays cheap.
"""

from __future__ import annotations

from robosteer.lazy import lazy_exports


_EXPORTS = {
    "ActionTokenizer": "robosteer.models.action_tokenizer",
    "ImageProcessor": "robosteer.models.processor",
    "OpenVLA": "robosteer.models.vla",
    "VLAOutput": "robosteer.models.vla",
    "VLAConfig": "robosteer.models.config",
    "ViTConfig": "robosteer.models.config",
    "ModelBatch": "robosteer.models.sequence",
    "SequenceBuilder": "robosteer.models.sequence",
    "build_vla_from_config": "robosteer.models.loading",
    "load_vla": "robosteer.models.loading",
    "save_vla": "robosteer.models.saving",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

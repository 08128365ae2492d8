"""pi0 (lerobot's PyTorch pi0 policy) as a robosteer model family: config, towers, processor, loading.

``robosteer.load_vla(folder)`` recognises a lerobot pi0 folder and returns a ``Pi0Policy``; the
family's mapping file is ``models/families/pi0.py``. Names load on first use.
"""

from __future__ import annotations

from robosteer.lazy import lazy_exports

_EXPORTS = {
    "Pi0Config": "robosteer.models.pi0.config",
    "GemmaDims": "robosteer.models.pi0.config",
    "SiglipDims": "robosteer.models.pi0.config",
    "Pi0Policy": "robosteer.models.pi0.model",
    "Pi0Output": "robosteer.models.pi0.model",
    "Pi0Normalizer": "robosteer.models.pi0.processor",
    "build_pi0": "robosteer.models.pi0.loading",
    "load_pi0": "robosteer.models.pi0.loading",
    "is_pi0_folder": "robosteer.models.pi0.loading",
    "save_pi0": "robosteer.models.pi0.saving",
    "tiny_pi0": "robosteer.models.pi0.tiny",
    "tiny_pi0_config": "robosteer.models.pi0.tiny",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""robosteer: find the attention heads of a vision-language-action policy that matter for a task, and finetune only those.

Importing is cheap: the model code (torch, transformers) loads on first use of one of
the names below, and the simulator, plots and trainers only inside their own modules.

Usage::

    import robosteer
    vla = robosteer.load_vla("path/to/openvla-checkpoint")
    action = vla.predict_action(image, "pick up the red cube")
    ex = robosteer.explain(vla, image, "pick up the red cube")   # why: each head's direct effect on it
"""

from __future__ import annotations

from .lazy import lazy_exports
from .sites import Head, HeadLayout, HookSite, hook_name

__version__ = "0.1.0"

_LAZY = {
    "load_vla": "robosteer.models",
    "build_vla_from_config": "robosteer.models",
    "save_vla": "robosteer.models",
    "OpenVLA": "robosteer.models",
    "VLAConfig": "robosteer.models",
    "ViTConfig": "robosteer.models",
    "tiny_config": "robosteer.models.tiny",
    "explain": "robosteer.explanation.api",
    "Explanation": "robosteer.explanation.result",
    "FileFormatError": "robosteer.files",  # the error for a malformed file: names the file and the field
}

__all__ = ["Head", "HeadLayout", "HookSite", "hook_name", "__version__", *_LAZY]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

"""Where the shipped default policy lives inside the installed package.

Torch-free and below ``loading.py`` (``load_vla("default")``) and ``cli.py``, which import
``default_checkpoint_dir`` from here; ``default.py`` holds the policy's shape only.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_POLICY_NAME = "openvla-tiny-franka"


def default_checkpoint_dir() -> Path:
    """The folder of the shipped default policy inside the installed package."""
    path = Path(__file__).resolve().parent.parent / "assets" / DEFAULT_POLICY_NAME
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the default policy is not in this installation ({path}); train it with `robosteer pretrain`"
        )
    return path

"""Turning a policy name or path into a policy callable.

``load_policy("expert")`` is the scripted expert. Any other value is a saved policy,
loaded by ``robosteer.app.policy.load_policy(path)`` — the model team's hook, imported
only when needed so that the simulator does not depend on the model code.
"""

from __future__ import annotations

import importlib

from .expert import ScriptedExpert

POLICY_MODULE = "robosteer.app.policy"


def load_policy(spec: str):
    """``policy = load_policy("expert")`` or ``load_policy("runs/vla/policy.safetensors")``."""
    if spec == "expert":
        return ScriptedExpert()
    try:
        module = importlib.import_module(POLICY_MODULE)
    except ModuleNotFoundError as err:
        if err.name != POLICY_MODULE:
            raise
        raise ValueError(
            f"cannot load policy {spec!r}: loading a saved policy needs {POLICY_MODULE}.load_policy(path), "
            "which this installation does not have; use --policy expert"
        ) from None
    loader = getattr(module, "load_policy", None)
    if loader is None:
        raise ValueError(f"{POLICY_MODULE} has no load_policy(path) function")
    return loader(spec)

"""Lazy package exports: names load on first use, so ``import robosteer...`` stays cheap.

Usage (in a package ``__init__``)::

    __getattr__, __dir__ = lazy_exports(__name__, {"load_vla": "robosteer.models.loading"})
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """Module-level ``__getattr__`` and ``__dir__`` resolving ``exports`` (name -> module) on first access."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    return __getattr__, __dir__

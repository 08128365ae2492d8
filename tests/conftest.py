"""Shared test fixtures: paths to the OpenVLA reference fixtures and tiny real-architecture models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"  # byte-identical copies of the reference fixtures (see its README.md)


def fixture_path(*parts: str) -> Path:
    """A file of the reference fixtures (``tests/fixtures``), or skip-free failure if absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference fixture missing: {path} (tests/fixtures ships with the repository; "
                    "restore it from git, e.g. `git checkout -- tests/fixtures`)")
    return path


@pytest.fixture(scope="session")
def openvla_tiny_a() -> Path:
    return fixture_path("openvla-tiny-a")


@pytest.fixture()
def ckpt(openvla_tiny_a, tmp_path):
    """A writable copy of the reference checkpoint."""
    dst = tmp_path / "ckpt"
    shutil.copytree(openvla_tiny_a, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


@pytest.fixture(scope="session")
def tiny_vla():
    """A random tiny OpenVLA (2 towers, 2-layer 4-head Llama), float32, eval mode. Do not mutate."""
    from robosteer.models.tiny import tiny_vla as make

    return make(seed=0)

"""Atomic file writes: a reader never sees a half-written score table, mask or plot.

``atomic_write_text(path, text)`` and ``atomic_write_bytes(path, data)`` write to a
temporary file in the destination's own directory (so the final rename stays on one
file system) and then ``os.replace`` it over the destination. Used by
``circuits.scores``, ``masks`` and ``viz``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """``atomic_write_bytes("mask.safetensors", blob)``: write all of ``data`` or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``atomic_write_text("scores.json", text)``: the text counterpart of ``atomic_write_bytes``."""
    return atomic_write_bytes(path, text.encode(encoding))

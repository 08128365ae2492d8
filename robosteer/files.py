"""Safe file I/O, for every floor: atomic writes and JSON reads with errors that name the file.

- ``atomic_write_text(path, text)`` / ``atomic_write_bytes(path, data)``: write to a temporary
  file in the destination's own directory (so the final rename stays on one file system), then
  ``os.replace`` it over the destination: a reader never sees a half-written table, mask or plot;
- ``write_json_atomic(path, obj)`` and ``save_safetensors_atomic(tensors, path)``: the same for
  JSON and safetensors;
- ``atomic_directory(target)``: build a folder next to ``target`` and swap it in when complete;
- ``read_json(path, what)``: load JSON, with errors that say which file and what is wrong;
- ``FileFormatError``: the error every reader raises for a malformed file a user gave it
  (a ``ValueError`` whose message names the file, the field and what was expected).

Usage::

    with atomic_directory(out) as tmp:
        write_json_atomic(tmp / "config.json", cfg)
    cfg = read_json(out / "config.json", "model config")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


class FileFormatError(ValueError):
    """A file is malformed or does not fit what it is loaded into; the message names the file and the field.

    ``FileFormatError(path, "n_action_bins", "expected an integer, got 'abc'")`` reads
    ``"<path>: field 'n_action_bins': expected an integer, got 'abc'"``; ``field=None`` is for
    the file as a whole.
    """

    def __init__(self, path, field: str | None, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if field is None else f"{path}: field {field!r}: {problem}")
        self.path, self.field, self.problem = Path(path), field, problem


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


def write_json_atomic(path: str | os.PathLike, obj: Any, *, newline: bool = True, sort_keys: bool = False) -> Path:
    """``write_json_atomic("config.json", cfg)``: JSON indented by 2, atomically.

    ``newline=False`` leaves out the final newline (the byte layout of files that never had one:
    study cells, ``policy.json``, activation indexes); ``sort_keys`` orders every object's keys.
    """
    text = json.dumps(obj, indent=2, sort_keys=sort_keys)
    return atomic_write_bytes(path, (text + "\n" if newline else text).encode())


def save_safetensors_atomic(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save`` to a temp file, then rename."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder at a temporary path next to ``target`` and swap it in when the block succeeds.

    An existing ``target`` is replaced only after the new folder is complete; on error it is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700 folders; give the mode a plain mkdir would
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Load a JSON file, with errors that say which file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise FileFormatError(path, None, f"{what} is not valid JSON ({err})") from err
    except UnicodeDecodeError as err:  # a binary file: pickle, safetensors, an image
        raise FileFormatError(path, None, f"{what} is not a JSON text file (byte {err.start} is not UTF-8); "
                              "expected JSON, got a binary file such as a pickle or safetensors file") from err

"""Streaming head activations to disk while recording, so memory stays bounded by one batch.

``record_heads(vla, frames, config, out=DIR)`` uses ``HeadActivationsWriter`` to write
each batch's per-tower activations straight into ``acts.<tower>.npy`` files (plain
``.npy``, float32, preallocated to the final (N, L, H, D) shape and filled batch by
batch through a memory map). When every frame is written, the frames' targets go to
``targets.safetensors`` and ``index.json`` is written last.

The whole folder is built at a temporary ``.DIR.*.partial`` path and renamed to ``DIR``
only once it is complete (``robosteer.files.atomic_directory``), so an interrupted
run leaves either no ``DIR`` or the previous one untouched, never a folder that loads as
complete; the partial folder itself has no ``index.json`` and refuses to load.

``HeadActivations.load(DIR)`` reads either layout (this one, through ``read_streamed``, or
the single-file ``HeadActivations.save``); here the activations come back memory-mapped, so
the scorers page them in as they read them. Only ``.npy`` (``allow_pickle=False``),
safetensors and JSON are read. This module knows nothing of ``record``: ``record`` imports
it, never the other way round.

Usage::

    with HeadActivationsWriter("runs/acts", actions, episodes, frames, layout=vla.head_layout) as writer:
        for batch in batches:
            writer.append({"llm": z_llm})  # (B, L, H, D) per tower
    acts = HeadActivations.load("runs/acts")
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..sites import HeadLayout

FORMAT_VERSION = 1  # ``format_version`` of index.json, for both layouts (``HeadActivations.save`` and this one)
STORAGE = "npy-stream"  # ``storage`` field of index.json for this layout


class HeadActivationsWriter:
    """Writes ``{tower: (B, L, H, D)}`` batches of N frames to a folder; complete only when all N are in.

    ``actions`` (N, A), ``episodes`` (N,), ``frames`` (N,) describe the frames in the order
    they will be appended (the recorder knows them before running the model).
    """

    def __init__(self, directory: str | Path, actions, episodes, frames, *, layout: HeadLayout,
                 position: str = "first_action", fingerprint: str | None = None,
                 instructions: Sequence[str] = ()) -> None:
        self.directory = Path(directory)
        self.actions = np.ascontiguousarray(actions, dtype=np.float64)
        self.episodes = np.asarray(episodes, dtype=np.int64)
        self.frames = np.asarray(frames, dtype=np.int64)
        self.n = int(self.actions.shape[0])
        if self.episodes.shape != (self.n,) or self.frames.shape != (self.n,):
            raise ValueError(f"episodes and frames must be ({self.n},) like the actions' first axis, got "
                             f"{self.episodes.shape} and {self.frames.shape}")
        self.meta = {"layout": layout.to_dict(), "position": position, "fingerprint": fingerprint,
                     "instructions": [str(s) for s in instructions]}
        self.written = 0
        self._arrays: dict[str, np.memmap] = {}
        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> "HeadActivationsWriter":
        from ..files import atomic_directory

        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_directory(self.directory))
        return self

    def append(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Write the next B frames: ``{tower: (B, L, H, D)}``, the same towers every time."""
        if self._tmp is None:
            raise RuntimeError("use HeadActivationsWriter as a context manager: `with HeadActivationsWriter(...) as w:`")
        if not self._arrays:
            for tower, x in batch.items():
                self._arrays[tower] = np.lib.format.open_memmap(
                    self._tmp / f"acts.{tower}.npy", mode="w+", dtype=np.float32, shape=(self.n, *x.shape[1:]))
        if set(batch) != set(self._arrays):
            raise ValueError(f"batch has towers {sorted(batch)}; the first batch had {sorted(self._arrays)}")
        sizes = {int(x.shape[0]) for x in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"towers of one batch differ in batch size: {sorted(sizes)}")
        b = sizes.pop()
        if self.written + b > self.n:
            raise ValueError(f"{self.written + b} frames appended; the writer was made for {self.n}")
        for tower, x in batch.items():
            out = self._arrays[tower]
            if tuple(x.shape[1:]) != out.shape[1:]:
                raise ValueError(f"tower {tower!r}: batch shape {tuple(x.shape)} does not match (B, *{out.shape[1:]})")
            out[self.written : self.written + b] = x.detach().cpu().to(torch.float32).numpy()
            out.flush()
        self.written += b

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        except BaseException as err:
            self._stack.__exit__(type(err), err, err.__traceback__)
            raise
        self._stack.__exit__(exc_type, exc, tb)  # on success this renames the folder into place

    def _finish(self) -> None:
        from ..files import save_safetensors_atomic, write_json_atomic

        if self.written != self.n or not self._arrays:
            raise ValueError(f"only {self.written} of {self.n} frames were appended; not saving {self.directory}")
        shapes = {tower: list(array.shape) for tower, array in self._arrays.items()}
        for array in self._arrays.values():
            array.flush()
        self._arrays.clear()  # drops the maps before the folder is renamed into place
        save_safetensors_atomic({"actions": torch.from_numpy(self.actions), "episodes": torch.from_numpy(self.episodes),
                                 "frames": torch.from_numpy(self.frames)}, self._tmp / "targets.safetensors")
        index = {"format_version": FORMAT_VERSION, "storage": STORAGE, "n_frames": self.n, "towers": list(shapes),
                 "shapes": shapes, **self.meta}
        write_json_atomic(self._tmp / "index.json", index, newline=False)  # last: marks the folder complete


def read_streamed(directory: Path, meta: dict) -> dict:
    """The ``HeadActivations`` fields of a folder written by ``HeadActivationsWriter``, activations memory-mapped."""
    from safetensors.torch import load_file

    n = int(meta["n_frames"])
    acts = {}
    for tower in meta["towers"]:
        path = directory / f"acts.{tower}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"activations not found: {path} (listed in {directory}/index.json)")
        try:  # copy-on-write map: torch gets a writable array, the file is never changed
            array = np.load(path, mmap_mode="c", allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path} is truncated or not a valid .npy file ({err}); record again") from err
        expected = (n, *meta["shapes"][tower][1:])
        if array.shape != expected or array.dtype != np.float32:
            raise ValueError(f"{path} holds {array.dtype} {array.shape}; index.json says float32 {expected}")
        acts[tower] = torch.from_numpy(array)
    path = directory / "targets.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"targets not found: {path}")
    t = load_file(str(path))
    for key in ("actions", "episodes", "frames"):
        if key not in t or t[key].shape[0] != n:
            raise ValueError(f"{path}: {key!r} missing or not {n} rows")
    return dict(acts=acts, actions=t["actions"].numpy(), episodes=t["episodes"].numpy(), frames=t["frames"].numpy(),
                layout=HeadLayout(meta["layout"]), position=meta["position"], fingerprint=meta.get("fingerprint"),
                instructions=list(meta.get("instructions", [])))

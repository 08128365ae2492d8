"""Reading and writing checkpoint weight files safely.

- Every write is atomic (``robosteer.files``): a file goes to a temporary name in the same
  folder and is renamed into place; a checkpoint folder is built next to its target and swapped in.
- Weights load only from safetensors (single file or sharded with an index). Pickle
  files (``.bin``/``.pt``) are refused unless the caller opts in, and even then go
  through ``torch.load(weights_only=True)``.
- Bad files give errors that name the file and the problem.

Usage::

    with robosteer.files.atomic_directory(out) as tmp:   # atomic folders and JSON writes: robosteer/files.py
        save_sharded(state_dict, tmp, max_shard_size=2**30)
    header = read_checkpoint_header(weight_files(folder))  # {key: (shape, dtype, file)}
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from ..files import FileFormatError, read_json, save_safetensors_atomic, write_json_atomic

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt")

_ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def weight_files(directory: Path, allow_pickle: bool = False) -> list[Path]:
    """The weight files of a checkpoint folder (safetensors; pickle only when allowed)."""
    index = directory / SAFETENSORS_INDEX
    if index.is_file():
        data = read_json(index, "safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
            raise FileFormatError(index, "weight_map", "missing or malformed; expected {tensor name: shard file name}")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shard(s) that do not exist: {missing}")
        return files
    single = directory / SAFETENSORS_SINGLE
    if single.is_file():
        return [single]
    stray = sorted(p.name for p in directory.glob("*.safetensors"))
    if stray:
        return [directory / name for name in stray]
    pickles = [directory / n for n in PICKLE_NAMES if (directory / n).is_file()] + sorted(directory.glob("pytorch_model-*.bin"))
    if pickles:
        if not allow_pickle:
            raise ValueError(
                f"{directory} holds only pickle weights ({pickles[0].name}); robosteer loads safetensors by default because "
                "pickle files can run code. If you trust this file, pass allow_pickle=True (it is then read with "
                "torch.load(weights_only=True)), or convert it to safetensors."
            )
        return [p for p in pickles if p.suffix in (".bin", ".pt")]
    raise FileNotFoundError(f"no weights in {directory}: expected {SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX}")


def read_checkpoint_header(files: list[Path]) -> dict[str, tuple[tuple[int, ...], torch.dtype, Path]]:
    """Every tensor's shape and dtype, read from the safetensors headers without loading any data."""
    from safetensors import safe_open

    out: dict[str, tuple[tuple[int, ...], torch.dtype, Path]] = {}
    for path in files:
        if path.suffix != ".safetensors":
            for key, t in _load_pickle(path).items():
                out[key] = (tuple(t.shape), t.dtype, path)
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    out[key] = (tuple(sl.get_shape()), _ST_DTYPES.get(sl.get_dtype(), sl.get_dtype()), path)
        except Exception as err:  # safetensors raises its own error type for a bad header
            raise ValueError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from err
    return out


def iter_tensors(path: Path, device: str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(key, tensor)`` from one weight file, one tensor at a time."""
    if path.suffix != ".safetensors":
        yield from _load_pickle(path).items()
        return
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            for key in f.keys():
                yield key, f.get_tensor(key)
    except Exception as err:
        raise ValueError(f"{path}: could not read tensors ({type(err).__name__}: {err})") from err


def check_keys(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: str) -> None:
    """Raise naming the first missing, unexpected and mis-shaped keys."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [(k, found[k], expected[k]) for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or shapes):
        return
    lines = [f"checkpoint {where} does not match the model its config.json describes:"]
    if missing:
        lines.append(f"  missing {len(missing)} key(s), first: {missing[:5]}")
    if unexpected:
        lines.append(f"  unexpected {len(unexpected)} key(s), first: {unexpected[:5]}")
    for key, got, want in shapes[:5]:
        lines.append(f"  shape mismatch for {key}: checkpoint has {list(got)}, model expects {list(want)}")
    if len(shapes) > 5:
        lines.append(f"  ... and {len(shapes) - 5} more shape mismatches")
    raise ValueError("\n".join(lines))


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FileFormatError(path, None, f"could not read pickle weights with weights_only=True ({err})") from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise FileFormatError(path, None, f"expected a state dict {{name: tensor}}, got {type(state).__name__}")
    return state


def save_sharded(state_dict: dict[str, torch.Tensor], directory: Path, max_shard_size: int) -> list[str]:
    """Write ``model.safetensors`` or ``model-0000N-of-0000M.safetensors`` + index, in state-dict order."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in state_dict.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_safetensors_atomic(shards[0], directory / SAFETENSORS_SINGLE, metadata=meta)
        return [SAFETENSORS_SINGLE]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_safetensors_atomic(shard, directory / name, metadata=meta)
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    write_json_atomic(directory / SAFETENSORS_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return names

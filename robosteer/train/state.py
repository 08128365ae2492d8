"""Training checkpoints for exact resumption: trainable weights, optimizer, scheduler and RNG states.

A checkpoint is a folder ``<out>/checkpoints/step-0000120/`` built aside and swapped in
atomically (``robosteer.files.atomic_directory``), so the latest complete folder is
always a good one. Nothing in it is pickled:

- ``trainable.safetensors``: every parameter with ``requires_grad`` (by module path);
- ``optimizer.safetensors``: each tensor of the optimizer state, keyed ``"<parameter path>::<name>"``
  (``torch.distributed.checkpoint``'s name-keyed layout, the same for one process, DDP or FSDP);
- ``rng.safetensors``: each process's torch CPU (and CUDA) generator state and numpy key array;
- ``ema.safetensors`` (runs with ``ema_decay``): the weight average (``ema.py``), by parameter name;
- ``state.json``: step, the optimizer's param groups and non-tensor state, the scheduler's
  state, python/numpy RNG scalars, the data-order position, the names of the optimised
  parameters, the strategy, the base-model fingerprint and the run's config.

Usage::

    weights, optim = gather_state(model, optimizer)
    save_checkpoint(path, step=10, weights=weights, optimizer_state=optim, scheduler=sched, rng=[capture_rng()],
                    extra={...})
    info = load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, trainable=names, rank=0)
    latest = latest_checkpoint(out_dir / "checkpoints")
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..files import atomic_directory, read_json, save_safetensors_atomic, write_json_atomic

STATE_JSON = "state.json"
EMA_FILE = "ema.safetensors"
CHECKPOINT_FORMAT = "robosteer.train_checkpoint"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def read_average(path: Path) -> dict[str, torch.Tensor]:
    """The weight average a checkpoint holds (``ema.safetensors``); a clear error when it has none."""
    from safetensors.torch import load_file

    if not (path / EMA_FILE).is_file():
        raise ValueError(f"{path} has no {EMA_FILE}: it was written by a run without ema_decay, so this run "
                         "(with a weight average) cannot resume from it; use another out_dir or the same ema_decay")
    return load_file(str(path / EMA_FILE))


def checkpoint_dir(root: Path, step: int) -> Path:
    """``checkpoint_dir(out / "checkpoints", 120)`` -> ``.../step-0000120``."""
    return root / f"step-{step:07d}"


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root``, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [(int(m[1]), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / STATE_JSON).is_file()]
    return max(found)[1] if found else None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    found = sorted((int(m[1]), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for _, path in found[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


# --- RNG ----------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """``capture_rng()`` -> this process's generator states: ``{"tensors": {...}, "json": {...}}``."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    return {"tensors": tensors,
            "json": {"numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)],
                     "python": [py_version, list(py_state), py_gauss]}}


def restore_rng(state: dict[str, Any]) -> None:
    """``restore_rng(capture_rng())``: put this process's generators back in a captured state."""
    tensors, scalars = state["tensors"], state["json"]
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, pos, has_gauss, gauss = scalars["numpy"]
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = scalars["python"]
    random.setstate((version, tuple(py_state), py_gauss))


# --- model and optimizer state ----------------------------------------------------------------
def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Full trainable weights and optimizer state, keyed by parameter name, on CPU.

    Uses ``torch.distributed.checkpoint.state_dict``, which un-wraps DDP and gathers FSDP shards, so
    the files are the same whatever the parallelism. A collective under FSDP: call on every rank.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for name, entries in sd["state"].items():
        for key, value in entries.items():
            (tensors if isinstance(value, torch.Tensor) else scalars)[f"{name}::{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        name, key = flat.rsplit("::", 1)
        state.setdefault(name, {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# --- save / load --------------------------------------------------------------------------------
def save_checkpoint(path: Path, *, step: int, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
                    scheduler: Any, rng: list[dict[str, Any]], extra: dict[str, Any],
                    average: dict[str, torch.Tensor] | None = None) -> Path:
    """Write one checkpoint folder atomically (``weights``/``optimizer_state`` from :func:`gather_state`;
    ``rng`` holds one :func:`capture_rng` per process, by rank; ``average``: the weight average, ``ema.py``)."""
    opt_tensors, opt_meta = _split_optimizer(optimizer_state)
    rng_tensors = {f"rank{r}.{k}": v for r, state in enumerate(rng) for k, v in state["tensors"].items()}
    meta = {"format": CHECKPOINT_FORMAT, "version": 1, "step": step, "parameters": sorted(weights),
            "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
            "rng": [state["json"] for state in rng], **extra}
    with atomic_directory(path) as tmp:
        save_safetensors_atomic(weights, tmp / "trainable.safetensors")
        save_safetensors_atomic(opt_tensors, tmp / "optimizer.safetensors")
        save_safetensors_atomic(rng_tensors, tmp / "rng.safetensors")
        if average is not None:
            save_safetensors_atomic(average, tmp / EMA_FILE)
        write_json_atomic(tmp / STATE_JSON, meta)
    return path


def read_state(path: Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint (step, strategy, config, ...), checked for format."""
    meta = read_json(path / STATE_JSON, "training checkpoint state")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a robosteer training checkpoint (format={meta.get('format')!r})")
    return meta


def load_checkpoint(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    trainable: list[str], rank: int = 0) -> dict[str, Any]:
    """Restore a checkpoint into a prepared (possibly wrapped) model, its optimizer and scheduler, and this rank's RNG.

    ``trainable`` names the parameters this run optimises; they must be exactly the saved ones.
    Returns the checkpoint's ``state.json``. A collective under FSDP: call on every rank.
    """
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    meta = read_state(path)
    if sorted(trainable) != meta["parameters"]:
        missing, extra = sorted(set(meta["parameters"]) - set(trainable)), sorted(set(trainable) - set(meta["parameters"]))
        raise ValueError(f"{path} trained other parameters than this run: missing here {missing[:4]}, "
                         f"new here {extra[:4]} (same strategy, mask and model needed to resume)")
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, load_file(str(path / "trainable.safetensors")), options=options)
    set_optimizer_state_dict(model, optimizer, _join_optimizer(load_file(str(path / "optimizer.safetensors")),
                                                               meta["optimizer"]), options=options)
    scheduler.load_state_dict(meta["scheduler"])
    rng_all = load_file(str(path / "rng.safetensors"))
    if rank >= len(meta["rng"]):
        raise ValueError(f"{path} was written by {len(meta['rng'])} process(es); cannot resume as rank {rank}")
    prefix = f"rank{rank}."
    restore_rng({"tensors": {k[len(prefix):]: v for k, v in rng_all.items() if k.startswith(prefix)},
                 "json": meta["rng"][rank]})
    return meta

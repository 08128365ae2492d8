"""Dataset statistics in OpenVLA's ``dataset_statistics.json`` layout.

OpenVLA normalises actions per dimension with the 1st and 99th percentiles, except
where ``mask`` is false (the gripper, kept as is). The layout is::

    {dataset_name: {"action": {"mean", "std", "min", "max", "q01", "q99", "mask"},
                    "proprio": {"mean", "std", "min", "max", "q01", "q99"},
                    "num_transitions": int, "num_trajectories": int}}

``check_statistics(stats, path)`` checks a file's statistics against that layout (as far as
normalising uses it) and raises ``FileFormatError`` naming the file and the field.
"""

from __future__ import annotations

import math

import numpy as np

from ..files import FileFormatError

# Normalise the 6 arm dimensions, keep the binary gripper (OpenVLA's convention).
ACTION_MASK: tuple[bool, ...] = (True,) * 6 + (False,)


def _summary(values: np.ndarray) -> dict[str, list[float]]:
    values = np.asarray(values, dtype=np.float64)
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "q01": np.quantile(values, 0.01, axis=0).tolist(),
        "q99": np.quantile(values, 0.99, axis=0).tolist(),
    }


def dataset_statistics(name: str, actions: np.ndarray, proprio: np.ndarray, num_trajectories: int) -> dict:
    """``dataset_statistics("robosteer_sim", actions, proprio, n_episodes)`` in OpenVLA layout."""
    actions = np.asarray(actions)
    if len(actions) == 0:
        raise ValueError("cannot compute statistics of an empty dataset")
    action_stats = _summary(actions)
    mask = list(ACTION_MASK) if actions.shape[1] == len(ACTION_MASK) else [True] * (actions.shape[1] - 1) + [False]
    action_stats["mask"] = mask
    return {
        name: {
            "action": action_stats,
            "proprio": _summary(proprio),
            "num_transitions": int(len(actions)),
            "num_trajectories": int(num_trajectories),
        }
    }


_VECTORS = ("q01", "q99", "min", "max", "mean", "std")  # per-dimension statistics of one block


def check_statistics(stats, path, field: str = "dataset_statistics") -> dict:
    """``check_statistics(json.load(f), "dataset_statistics.json")``: the statistics, or ``FileFormatError``.

    Every dataset needs ``action.q01``/``action.q99`` (non-empty, equal length); the other vectors,
    ``mask`` and the ``proprio`` block are checked where present.
    """
    if not isinstance(stats, dict):
        raise FileFormatError(path, field, f"expected an object {{dataset name: statistics}}, got {type(stats).__name__}")
    for name, entry in stats.items():
        where = f"{field}.{name}"
        if not isinstance(entry, dict):
            raise FileFormatError(path, where, f"expected an object with 'action' statistics, got {type(entry).__name__}")
        if not isinstance(entry.get("action"), dict):
            raise FileFormatError(path, f"{where}.action", "missing or not an object (OpenVLA layout: mean, std, "
                                  "min, max, q01, q99, mask)")
        for block in ("action", "proprio"):
            if block in entry:
                _check_block(entry[block], path, f"{where}.{block}", required=block == "action")
    return stats


def _check_block(block, path, where: str, required: bool) -> None:
    if not isinstance(block, dict):
        raise FileFormatError(path, where, f"expected an object of per-dimension lists, got {type(block).__name__}")
    if required:
        for key in ("q01", "q99"):
            if key not in block:
                raise FileFormatError(path, f"{where}.{key}", "missing (normalising needs q01 and q99)")
    length = None
    for key in (*_VECTORS, "mask"):
        if key not in block:
            continue
        values = block[key]
        kind = bool if key == "mask" else (int, float)
        if not isinstance(values, list) or not all(isinstance(v, kind) and (key == "mask" or not isinstance(v, bool))
                                                   for v in values):
            what = "booleans" if key == "mask" else "numbers"
            raise FileFormatError(path, f"{where}.{key}", f"expected a list of {what}, got {_short(values)}")
        if key != "mask" and not all(_finite(v) for v in values):
            raise FileFormatError(path, f"{where}.{key}", "contains NaN or infinite values")
        if length is None:
            length = len(values)
        elif len(values) != length:
            raise FileFormatError(path, f"{where}.{key}", f"has {len(values)} values, expected {length} like q01")
    if required and not length:
        raise FileFormatError(path, f"{where}.q01", "is empty; expected one value per action dimension")


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

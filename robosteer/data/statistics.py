"""Dataset statistics in OpenVLA's ``dataset_statistics.json`` layout.

OpenVLA normalises actions per dimension with the 1st and 99th percentiles, except
where ``mask`` is false (the gripper, kept as is). The layout is::

    {dataset_name: {"action": {"mean", "std", "min", "max", "q01", "q99", "mask"},
                    "proprio": {"mean", "std", "min", "max", "q01", "q99"},
                    "num_transitions": int, "num_trajectories": int}}
"""

from __future__ import annotations

import numpy as np

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

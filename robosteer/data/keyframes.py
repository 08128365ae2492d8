"""Keyframe flags of a trajectory: where the interesting decisions happen.

Head discovery and evaluation often look at a few frames per episode rather than all
of them: the first and last frame, the steps where the gripper command flips (grasp
and release decisions), and steps where the arm is nearly still (the gripper closing
or opening in place). The same rule is applied to recorded demos and to LeRobot data.
"""

from __future__ import annotations

import numpy as np

KEYFRAME_NAMES: tuple[str, ...] = ("is_first", "is_last", "gripper_flip", "still")
STILL_THRESHOLD = 0.1  # norm of the normalised xyz action under which the arm counts as still


def keyframe_flags(actions: np.ndarray, gripper_threshold: float = 0.0) -> dict[str, np.ndarray]:
    """``keyframe_flags(actions)`` -> {name: (T,) bool} for one episode's (T, 7) actions.

    ``gripper_flip[t]`` is true when the gripper command at ``t`` is on the other side
    of ``gripper_threshold`` than at ``t - 1``.
    """
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] < 4 or len(actions) == 0:
        raise ValueError(f"keyframe_flags needs (T, 7) actions with T >= 1, got shape {actions.shape}")
    t = len(actions)
    closed = actions[:, -1] > gripper_threshold
    flip = np.zeros(t, dtype=bool)
    flip[1:] = closed[1:] != closed[:-1]
    first = np.zeros(t, dtype=bool)
    first[0] = True
    last = np.zeros(t, dtype=bool)
    last[-1] = True
    still = np.linalg.norm(actions[:, :3], axis=1) < STILL_THRESHOLD
    return {"is_first": first, "is_last": last, "gripper_flip": flip, "still": still}

"""Success predicates of the task families, as pure functions of a state snapshot.

``is_success(scene, world)`` needs no simulator: tests build a :class:`WorldState`
by hand, and the env builds one from MuJoCo state at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import DIRECTIONS, PUSH_DISTANCE, SceneSpec

TABLE_TOP_Z = 0.8
LIFT_HEIGHT = 0.05  # metres the object's bottom must rise above the table
REST_TOLERANCE = 0.012  # an object this close to its resting height counts as set down


@dataclass
class WorldState:
    """Privileged state at one step (world frame, metres)."""

    object_pos: np.ndarray  # (N, 3) centres of the scene's objects, in scene order
    start_xy: np.ndarray  # (N, 2) start positions
    eef_pos: np.ndarray  # (3,)
    eef_rotvec: np.ndarray  # (3,) rotation away from the home orientation, world-frame axis-angle
    gripper_width: float  # distance between the fingers
    grasped: tuple[bool, ...]  # per object: both finger pads touch it


def _resting(z: float, h: float, base: float = TABLE_TOP_Z) -> bool:
    return z - h - base < REST_TOLERANCE


def lift_success(scene: SceneSpec, world: WorldState) -> bool:
    """The named object's bottom is at least 5 cm above the table."""
    target = scene.objects[0]
    return bool(world.object_pos[0, 2] - target.half_size - TABLE_TOP_Z > LIFT_HEIGHT)


def place_success(scene: SceneSpec, world: WorldState) -> bool:
    """The named object rests on the plate (centre within 80% of its radius) and is let go."""
    plate = scene.plates[0]
    pos, h = world.object_pos[0], scene.objects[0].half_size
    inside = np.hypot(pos[0] - plate.xy[0], pos[1] - plate.xy[1]) < 0.8 * plate.radius
    return bool(inside and _resting(pos[2], h) and not world.grasped[0])


def push_success(scene: SceneSpec, world: WorldState) -> bool:
    """The named object slid at least 8 cm along the named direction and stays on the table."""
    sign = DIRECTIONS[scene.direction]
    moved = sign * (world.object_pos[0, 1] - world.start_xy[0, 1])
    return bool(moved >= PUSH_DISTANCE and _resting(world.object_pos[0, 2], scene.objects[0].half_size) and not world.grasped[0])


def stack_success(scene: SceneSpec, world: WorldState) -> bool:
    """The named object sits on the support object, which still rests on the table, and is let go."""
    i = scene.index("support")
    top, bottom = world.object_pos[0], world.object_pos[i]
    h_top, h_bottom = scene.objects[0].half_size, scene.objects[i].half_size
    centred = np.hypot(*(top[:2] - bottom[:2])) < 0.8 * h_bottom
    on_top = _resting(top[2], h_top, base=bottom[2] + h_bottom) and top[2] > bottom[2] + h_bottom
    return bool(centred and on_top and _resting(bottom[2], h_bottom) and not world.grasped[0])


PREDICATES = {"lift": lift_success, "place": place_success, "push": push_success, "stack": stack_success}


def is_success(scene: SceneSpec, world: WorldState) -> bool:
    """``is_success(scene, env.world_state())``: the predicate of the scene's task family."""
    return PREDICATES[scene.task.family](scene, world)

"""Scripted experts for every task family, written to be easy to imitate.

The expert reads privileged state (object poses, grasp contacts) but chooses its
action as a function of the *current* state only (Markovian), in a way a policy can
infer from the image and the proprio vector: which phase it is in follows from where
the gripper is relative to the objects and how far the fingers are open. Moves are
saturating (each axis at +-1 when more than a few centimetres from its goal, then
proportional), the gripper command is binary (-1 open, +1 close), and rotation deltas
are 0 except to undo drift of more than ~3 degrees away from the home orientation
(the OSC controller lets orientation creep while the arm moves).

``ScriptedExpert`` is a policy callable for the rollout evaluator and the collector;
``expert_action(scene, world)`` is the same rule as a pure function.
"""

from __future__ import annotations

import numpy as np

from .predicates import TABLE_TOP_Z, WorldState
from .scene import DIRECTIONS, PUSH_DISTANCE, SceneSpec

OPEN, CLOSE = -1.0, 1.0
SATURATION = 0.025  # metres of error at which an axis command reaches +-1 (1.0 ~ 2 cm per 10 Hz step)
ALIGNED = 0.01  # xy error under which the gripper counts as above its goal
HOVER_Z = TABLE_TOP_Z + 0.13  # travel height of the gripper between objects
CARRY_Z = TABLE_TOP_Z + 0.16  # travel height with an object in hand
LIFT_Z = TABLE_TOP_Z + 0.17  # lift goal: well above the 5 cm success line
PUSH_SPEED = 0.6  # axis command along the push direction
PUSH_Z = TABLE_TOP_Z + 0.012  # grip-site height while pushing: fingertips ~7 mm above the table, low enough not to tip a cube
PUSH_STANDOFF = 0.03  # gap behind the object's face where the push starts
RELEASE_GAP = 0.008  # object bottom this close to its support: open the gripper
RESTED = 0.004  # object bottom this close to its support: it has been set down
ROT_DEADBAND = 0.05  # radians of orientation drift tolerated before correcting
ROT_SCALE = 0.5  # radians per unit rotation command (OSC_POSE output_max)


def _move(delta: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(delta, dtype=float) / SATURATION, -1.0, 1.0)


def _action(move_xyz, gripper: float) -> np.ndarray:
    action = np.zeros(7)
    action[:3] = move_xyz
    action[6] = gripper
    return action


def _go(eef: np.ndarray, goal: np.ndarray, travel_z: float, gripper: float) -> np.ndarray:
    """Go to ``goal`` via ``travel_z``: climb first when low and far, then fly level, then drop."""
    xy_err = goal[:2] - eef[:2]
    if np.linalg.norm(xy_err) > ALIGNED * 3 and eef[2] < travel_z - 0.04:
        return _action([0.0, 0.0, 1.0], gripper)  # climb straight up before moving sideways
    if np.linalg.norm(xy_err) > ALIGNED:
        return _action(_move([xy_err[0], xy_err[1], travel_z - eef[2]]), gripper)
    return _action(_move(goal - eef), gripper)


def _pick(world: WorldState, i: int, half: float) -> tuple[np.ndarray, str]:
    """Reach, grasp and hold object ``i``; returns (action, phase)."""
    obj, eef, width = world.object_pos[i], world.eef_pos, world.gripper_width
    grasp = np.array([obj[0], obj[1], max(obj[2], TABLE_TOP_Z + 0.015)])
    xy_err = np.linalg.norm(grasp[:2] - eef[:2])
    if width < 2 * half * 0.6:  # closed on nothing: open and back off
        return _action([0.0, 0.0, 1.0], OPEN), "regrasp"
    if xy_err < ALIGNED * 1.5 and abs(eef[2] - grasp[2]) < 0.012:
        return _action([0.0, 0.0, 0.0], CLOSE), "close"
    if xy_err < 2 * ALIGNED and width > 2 * half + 0.015:
        return _action(_move(grasp - eef), OPEN), "descend"
    if xy_err < 2 * ALIGNED:
        return _action([0.0, 0.0, 0.0], OPEN), "open"
    return _go(eef, np.array([grasp[0], grasp[1], HOVER_Z]), HOVER_Z, OPEN), "approach"


def _holding(world: WorldState, i: int) -> bool:
    return bool(world.grasped[i])


def _place_on(world: WorldState, i: int, half: float, goal_xy, support_top: float) -> tuple[np.ndarray, str]:
    """Carry held object ``i`` above ``goal_xy`` and set it down on ``support_top``."""
    obj, eef = world.object_pos[i], world.eef_pos
    offset = np.asarray(goal_xy) - obj[:2]
    if np.linalg.norm(offset) > ALIGNED:
        return _go(eef, np.array([eef[0] + offset[0], eef[1] + offset[1], CARRY_Z]), CARRY_Z, CLOSE), "carry"
    if obj[2] - half - support_top > RELEASE_GAP:
        lower = support_top + half - obj[2]
        return _action(_move([offset[0], offset[1], lower]), CLOSE), "lower"
    return _action([0.0, 0.0, 0.0], OPEN), "release"


def _lift(scene: SceneSpec, world: WorldState) -> tuple[np.ndarray, str]:
    half = scene.objects[0].half_size
    if _holding(world, 0):
        return _action(_move([0.0, 0.0, LIFT_Z - world.eef_pos[2]]), CLOSE), "lift"
    return _pick(world, 0, half)


def _set_down_done(world: WorldState, i: int, half: float, goal_xy, radius: float, support_top: float) -> bool:
    obj = world.object_pos[i]
    return bool(np.hypot(*(obj[:2] - np.asarray(goal_xy))) < radius and obj[2] - half - support_top < RESTED)


def _let_go(world: WorldState, half: float) -> tuple[np.ndarray, str]:
    """The object is down: open in place until the fingers clear it, then back off upwards."""
    if world.gripper_width < 2 * half + 0.015:
        return _action([0.0, 0.0, 0.0], OPEN), "release"
    return _action([0.0, 0.0, 1.0], OPEN), "retreat"


def _place(scene: SceneSpec, world: WorldState) -> tuple[np.ndarray, str]:
    half, plate = scene.objects[0].half_size, scene.plates[0]
    if _set_down_done(world, 0, half, plate.xy, 0.8 * plate.radius, TABLE_TOP_Z):
        return _let_go(world, half)
    if _holding(world, 0):
        return _place_on(world, 0, half, plate.xy, TABLE_TOP_Z)
    return _pick(world, 0, half)


def _stack(scene: SceneSpec, world: WorldState) -> tuple[np.ndarray, str]:
    half = scene.objects[0].half_size
    s = scene.index("support")
    support, s_half = world.object_pos[s], scene.objects[s].half_size
    top = support[2] + s_half
    if _set_down_done(world, 0, half, support[:2], 0.8 * s_half, top):
        return _let_go(world, half)
    if _holding(world, 0):
        return _place_on(world, 0, half, support[:2], top)
    return _pick(world, 0, half)


def _push(scene: SceneSpec, world: WorldState) -> tuple[np.ndarray, str]:
    half = scene.objects[0].half_size
    sign = DIRECTIONS[scene.direction]
    obj, eef = world.object_pos[0], world.eef_pos
    start = np.array([obj[0], obj[1] - sign * (half + PUSH_STANDOFF), PUSH_Z])
    behind = sign * (eef[1] - obj[1])  # negative while the gripper is behind the object
    if -(half + PUSH_STANDOFF + 0.03) < behind < -half and abs(obj[0] - eef[0]) < 0.015 and eef[2] < PUSH_Z + 0.015:
        move = _move([obj[0] - eef[0], 0.0, PUSH_Z - eef[2]])
        move[1] = sign * PUSH_SPEED
        return _action(move, CLOSE), "push"
    if np.linalg.norm(start[:2] - eef[:2]) < 2 * ALIGNED:
        return _action(_move(start - eef), CLOSE), "lower"
    return _go(eef, np.array([start[0], start[1], HOVER_Z]), HOVER_Z, CLOSE), "approach"


EXPERTS = {"lift": _lift, "place": _place, "push": _push, "stack": _stack}


def _hold_orientation(rotvec: np.ndarray) -> np.ndarray:
    if np.linalg.norm(rotvec) < ROT_DEADBAND:
        return np.zeros(3)
    return np.clip(-np.asarray(rotvec) / ROT_SCALE, -1.0, 1.0)


def expert_action(scene: SceneSpec, world: WorldState) -> tuple[np.ndarray, str]:
    """``action, phase = expert_action(env.scene, env.world_state())``; action is (7,) in [-1, 1]."""
    action, phase = EXPERTS[scene.task.family](scene, world)
    action[3:6] = _hold_orientation(world.eef_rotvec)
    return np.clip(action, -1.0, 1.0).astype(np.float32), phase


def task_goal(scene: SceneSpec, world: WorldState) -> np.ndarray:
    """(3,) where the named object should end up: lifted above its start, on the plate, pushed, or on the support."""
    half = scene.objects[0].half_size
    start = np.array([*world.start_xy[0], TABLE_TOP_Z + half])
    family = scene.task.family
    if family == "lift":
        return start + [0.0, 0.0, LIFT_Z - TABLE_TOP_Z]
    if family == "place":
        return np.array([*scene.plates[0].xy, TABLE_TOP_Z + half])
    if family == "push":
        return start + [0.0, DIRECTIONS[scene.direction] * PUSH_DISTANCE, 0.0]
    s = scene.index("support")
    return world.object_pos[s] + [0.0, 0.0, scene.objects[s].half_size + half]


def privileged_state(scene: SceneSpec, world: WorldState) -> np.ndarray:
    """(6,) float32: the named object's centre and its goal (world frame, metres); see robosteer.data.schema.STATE_NAMES.

    Recorded with demonstrations for auxiliary training targets only (the pretraining recipe
    predicts them from the policy's hidden state); a policy never receives them as input.
    """
    return np.concatenate([world.object_pos[0], task_goal(scene, world)]).astype(np.float32)


class ScriptedExpert:
    """Policy callable backed by privileged state: ``expert = ScriptedExpert(); expert.attach(env)``.

    The evaluator and collector call ``attach(env)`` before an episode; the call
    signature ``expert(image, instruction, proprio)`` matches learned policies.
    """

    def __init__(self) -> None:
        self.env = None
        self.phase = ""

    def attach(self, env) -> None:
        self.env = env

    def reset(self) -> None:
        self.phase = ""

    def __call__(self, image, instruction: str, proprio) -> np.ndarray:
        if self.env is None:
            raise ValueError("ScriptedExpert needs the env: call expert.attach(env) first")
        action, self.phase = expert_action(self.env.scene, self.env.world_state())
        return action

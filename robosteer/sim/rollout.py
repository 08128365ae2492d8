"""Running one closed-loop episode of a policy in the env.

Shared by the demonstration collector (the scripted expert, recording every step)
and the rollout evaluator (any policy). A *policy* is a callable
``policy(image, instruction, proprio) -> action (7,)``; if it has ``attach(env)`` it
is given the env first (the scripted expert reads privileged state through it), and
if it has ``reset()`` that is called at the start of every episode. With one camera
(the default) ``image`` is the (H, W, 3) agentview array; with several
(``SimConfig(cameras=("agentview", "wrist"))``) it is the tuple of views in camera order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .expert import privileged_state
from .scene import counterfactual_scene, sample_scene
from .tasks import Task, get_family


@dataclass
class Episode:
    """One rollout. Step arrays hold the observation *before* each action."""

    task: Task
    seed: int
    instruction: str
    success: bool
    length: int  # control steps taken
    images: np.ndarray | None = None  # (T, H, W, 3) uint8 main (agentview) images, when recorded
    proprio: np.ndarray | None = None  # (T, 7) float32
    actions: np.ndarray | None = None  # (T, 7) float32, the policy's (clean) actions
    phases: list[str] = field(default_factory=list)  # expert phase per step, when known
    states: np.ndarray | None = None  # (T, 6) float32 privileged target/goal positions (robosteer.data.schema.STATE_NAMES), when recorded
    views: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (T, H, W, 3), every view in order, when recorded with several cameras (views[first] is images)


def _policy_image(obs):
    """What the policy is given as ``image``: the array with one camera, the tuple of views with several."""
    return obs.images if getattr(obs, "views", None) else obs.image


def _video_frame(obs):
    return obs.side_by_side() if getattr(obs, "views", None) else obs.image


JITTER_STEPS = 12  # control steps the unrecorded move to a jittered start may take
JITTER_SATURATION = 0.025  # metres of error at which the move's command reaches +-1 (the expert's)


def jitter_start(env, rng: np.random.Generator, jitter: float):
    """Move the gripper (open, orientation held) towards a random offset of its start pose; returns the last observation."""
    start = np.asarray(env.world_state().eef_pos, dtype=float)
    goal = start + rng.uniform(-1.0, 1.0, 3) * np.array([jitter, jitter, jitter / 2])
    obs = None
    for _ in range(JITTER_STEPS):
        error = goal - np.asarray(env.world_state().eef_pos, dtype=float)
        if np.linalg.norm(error) < 0.01:
            break
        obs = env.act(np.concatenate([np.clip(error / JITTER_SATURATION, -1, 1), np.zeros(3), [-1.0]]))
    return obs if obs is not None else env.act(np.concatenate([np.zeros(6), [-1.0]]))


def _check_action(action) -> np.ndarray:
    action = np.asarray(action, dtype=np.float32).reshape(-1)
    if action.shape != (7,) or not np.all(np.isfinite(action)):
        raise ValueError(f"a policy must return 7 finite numbers (6 end-effector deltas + gripper), got {action!r}")
    return action


def run_episode(
    env,
    task: "Task | str",
    seed: int,
    policy,
    *,
    horizon: int | None = None,
    record: bool = False,
    action_noise: float = 0.0,
    frames: list | None = None,
    start_jitter: float = 0.0,
    counterfactual: bool = False,
    on_step=None,
) -> Episode:
    """``run_episode(env, "lift/base", 0, policy)``: reset to the seeded instance and roll out.

    Stops at the first step where the success predicate holds, or after ``horizon``
    steps (default: the family's). With ``action_noise`` > 0 the *executed* arm action
    gets Gaussian noise of that standard deviation (seeded by the episode seed) while
    the recorded action stays the policy's. With ``start_jitter`` > 0 the arm first moves
    (unrecorded, outside the horizon) to a seeded random offset of up to that many metres in x
    and y and half that in z from its start pose. ``frames``, if given, receives every image
    including the last one (for videos; with several cameras, the views side by side). With
    ``counterfactual`` the seeded scene is run with its distractor named instead of the target
    (``scene.counterfactual_scene``): same images at the start, another instruction and trajectory.
    ``on_step(step)``, if given, is called after each executed step (1, 2, ...): a progress bar's sign of life.
    """
    task = Task.parse(task)
    scene = sample_scene(task, seed)
    obs = env.reset_scene(counterfactual_scene(scene) if counterfactual else scene)
    horizon = horizon or get_family(task.family).horizon
    if hasattr(policy, "attach"):
        policy.attach(env)
    if hasattr(policy, "reset"):
        policy.reset()
    noise_rng = np.random.default_rng([int(seed), 0xA11CE])
    if start_jitter > 0:
        obs = jitter_start(env, np.random.default_rng([int(seed), 0x57A27]), start_jitter)
    images, proprio, actions, phases, states = [], [], [], [], []
    views: dict[str, list] = {}
    has_state = record and hasattr(env, "world_state") and hasattr(env, "scene")
    success = False
    steps = 0
    while steps < horizon:
        action = _check_action(policy(_policy_image(obs), obs.instruction, obs.proprio))
        if record:
            images.append(obs.image)
            for name, view in getattr(obs, "views", {}).items():
                views.setdefault(name, []).append(view)
            proprio.append(obs.proprio)
            actions.append(action)
            phases.append(getattr(policy, "phase", ""))
            if has_state:
                states.append(privileged_state(env.scene, env.world_state()))
        if frames is not None:
            frames.append(_video_frame(obs))
        executed = action.astype(np.float64)
        if action_noise > 0:
            executed[:6] += noise_rng.normal(0.0, action_noise, 6)
        obs = env.act(executed)
        steps += 1
        if on_step is not None:
            on_step(steps)
        if env.success():
            success = True
            break
    if frames is not None:
        frames.append(_video_frame(obs))
    episode = Episode(task, int(seed), obs.instruction, success, steps, phases=phases)
    if record:
        episode.images = np.stack(images) if images[0] is not None else None
        episode.proprio = np.stack(proprio).astype(np.float32)
        episode.actions = np.stack(actions).astype(np.float32)
        episode.states = np.stack(states) if has_state else None
        episode.views = {name: episode.images if name == next(iter(views)) else np.stack(v) for name, v in views.items()}
    return episode

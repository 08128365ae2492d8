"""Probes built from the Franka simulation suite: pairs of first frames that differ in one factor.

For a task instance (task, seed), the clean frame is the scene as sampled; the
corrupted frame changes one thing, and both carry the clean scene's expert action:

- ``visual``: the target and a distractor swap colours (shapes, where no object differs
  from the target in colour alone), so the instruction now names the object at the other place;
- ``linguistic``: the instruction names the distractor instead of the target (where
  the instruction names both, e.g. a relational reference, the two names swap);
- ``physical``: the target moves to another free place (mirrored across the table's
  centre line, or shifted), everything else stays;
- ``environment``: other lighting and table (the action should not need to change).

The first three change which action is right, so their clean-corrupted gap measures
how much the policy uses that factor; ``environment`` measures sensitivity to a
nuisance. ``visual`` and ``linguistic`` need another object of the target's shape and
another colour (a distractor, else e.g. a relational reference or a stacking support;
where every other object has the target's colour, as in ``lookalikes``, one of its colour
and another shape, and then the shapes swap);
draws without one are skipped, and a task that gives no usable pair in
``MAX_DRAWS_PER_PAIR * n`` draws raises a ``ValueError`` naming the task and the probe.

``discovery_probes(dataset, config)`` builds the probes ``robosteer discover``, the main example
and the study hand to ``circuits.discover`` for the causal scorers: the kinds of ``config.probes``,
``config.probe_pairs`` pairs each, on ``config.probe_task`` (default: the demonstrations' most common
task), from the scenes of ``probe_seed(config.seed)`` on. ``discover_in_sim`` is that discovery in
one call (what those three run), its probes rendered in the model's own views (``cameras_for_views`` of
its ``n_views``: a two-view policy is probed through the agentview and the wrist).

Usage::

    probe = sim_probe("visual", task="lift/base", n=16)
    scores = activation_patching(vla, probe)
    result = discover(vla, demos, config, probes=discovery_probes(demos, config))
    result = discover_in_sim(vla, demos, config, out="runs/heads")  # the same in one call
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from robosteer.circuits.probes import Probe
from robosteer.data.frames import Frame

SIM_PROBE_KINDS = ("visual", "linguistic", "physical", "environment")
PROBE_SEED = 2_000_000  # probe scenes: away from collection seeds (0, ...) and evaluation seeds (1,000,000, ...)
PROBE_SEED_STRIDE = 10_000  # discovery seed s draws its probe scenes from PROBE_SEED + s * stride on
MAX_DRAWS_PER_PAIR = 20  # scene draws allowed per requested pair before a probe kind is declared unbuildable


def probe_seed(seed: int) -> int:
    """First probe-scene seed of a discovery seed: other seeds, other scenes (seed 0: ``PROBE_SEED``)."""
    if seed < 0:
        raise ValueError(f"a discovery seed must be >= 0, got {seed}")
    return PROBE_SEED + seed * PROBE_SEED_STRIDE


def _swap(scene, field: str | None = None):
    """Swap the target's and its partner's ``field`` (default: the attribute in which the two differ)."""
    objs = list(scene.objects)
    t, d = scene.index("target"), _distractor_index(scene)
    field = field or ("color" if objs[t].shape == objs[d].shape else "shape")
    a, b = getattr(objs[t], field), getattr(objs[d], field)
    objs[t] = dataclasses.replace(objs[t], **{field: b})
    objs[d] = dataclasses.replace(objs[d], **{field: a})
    return dataclasses.replace(scene, objects=tuple(objs))


def _distractor_index(scene) -> int:
    """The object a probe swaps with the target: a distractor of its shape and another colour, else any such
    object; in a scene without one (lookalikes: every distractor has the target's colour), an object of its
    colour and another shape, so that the pair still differs in one visual attribute."""
    target = scene.object("target")
    for differs in ("color", "shape"):
        same = [(i, o) for i, o in enumerate(scene.objects)
                if o.role != "target" and getattr(o, differs) != getattr(target, differs)
                and all(getattr(o, f) == getattr(target, f) for f in ("color", "shape") if f != differs)]
        if same:
            return min(same, key=lambda pair: pair[1].role != "distractor")[0]  # the first distractor, else the first
    raise ValueError(f"scene {scene.task} seed {scene.seed} has no object that differs from the target in colour "
                     "or shape alone")


def _move_target(scene, min_shift: float = 0.08):
    """Move the target to the first free candidate place at least ``min_shift`` away."""
    from robosteer.sim.scene import MIN_GAP, TABLE_HALF_EXTENT

    objs = list(scene.objects)
    t = scene.index("target")
    x, y = objs[t].xy
    r = objs[t].half_size * 1.5
    others = [(o.xy, o.half_size * 1.5) for i, o in enumerate(objs) if i != t]
    others += [(p.xy, p.radius) for p in scene.plates]
    for cx, cy in ((x, -y), (x, y + 0.15), (x, y - 0.15), (x + 0.1, y), (x - 0.1, y), (-x, -y)):
        inside = abs(cx) <= TABLE_HALF_EXTENT - r and abs(cy) <= TABLE_HALF_EXTENT - r
        free = all(np.hypot(cx - ox, cy - oy) >= r + orad + MIN_GAP for (ox, oy), orad in others)
        if inside and free and np.hypot(cx - x, cy - y) >= min_shift:
            objs[t] = dataclasses.replace(objs[t], xy=(float(cx), float(cy)))
            return dataclasses.replace(scene, objects=tuple(objs))
    raise ValueError(f"no free place to move the target of {scene.task} seed {scene.seed}")


def corrupt_scene(scene, kind: str):
    """The corrupted twin of ``scene`` for a probe ``kind``."""
    if kind == "visual":
        return _swap(scene)
    if kind == "physical":
        return _move_target(scene)
    if kind == "linguistic":
        target, other = scene.object("target"), scene.objects[_distractor_index(scene)]
        old, new = f"{target.color} {target.shape}", f"{other.color} {other.shape}"
        if old not in scene.instruction:
            raise ValueError(f"instruction {scene.instruction!r} does not name the target as {old!r}")
        if new in scene.instruction:  # both named (relational reference, stacking support): swap the names
            swapped = "\0".join(part.replace(new, old) for part in scene.instruction.split(old))
            return dataclasses.replace(scene, instruction=swapped.replace("\0", new))
        return dataclasses.replace(scene, instruction=scene.instruction.replace(old, new))
    if kind == "environment":
        light = "dim_warm" if scene.light != "dim_warm" else "bright_cool"
        table = "wood" if scene.table != "wood" else "dark"
        return dataclasses.replace(scene, light=light, table=table)
    raise ValueError(f"unknown sim probe kind {kind!r}; known: {SIM_PROBE_KINDS}")


def sim_probe(kind: str, task: str = "lift/base", n: int = 16, seed: int = PROBE_SEED, image_size: int = 64,
              env=None, cameras: tuple[str, ...] | None = None) -> Probe:
    """``sim_probe("visual", "lift/base", n=16)`` -> a ``Probe`` of ``n`` first-frame pairs rendered in the sim.

    ``cameras`` (e.g. ``("agentview", "wrist")``, for a model with several views) renders every view of both
    sides of a pair, in that order (``Frame.views``); ``None`` or one camera: the agentview alone. A given
    ``env`` renders what its own ``SimConfig.cameras`` say.
    """
    from robosteer.sim.env import SimConfig, make_env
    from robosteer.sim.expert import expert_action
    from robosteer.sim.scene import sample_scene

    if kind not in SIM_PROBE_KINDS:
        raise ValueError(f"unknown sim probe kind {kind!r}; known: {SIM_PROBE_KINDS}")
    if n < 1:
        raise ValueError(f"a probe needs n >= 1 pairs, got {n}")
    own = env is None
    views = tuple(cameras) if cameras and len(cameras) > 1 else None
    env = env or make_env(SimConfig(image_size=image_size, **({"cameras": views} if views else {})))
    pairs, last_reason = [], "none"
    try:
        s = seed
        while len(pairs) < n:
            if s - seed >= MAX_DRAWS_PER_PAIR * n:
                raise ValueError(
                    f"cannot build a {kind!r} probe on {task}: {len(pairs)} of {n} pairs after {s - seed} scene draws "
                    f"(last reason: {last_reason})")
            scene = sample_scene(task, s)
            s += 1
            try:
                twin = corrupt_scene(scene, kind)
            except ValueError as err:
                last_reason = str(err)
                continue  # this draw has no suitable partner object / wording
            clean_obs = env.reset_scene(scene)
            action, _ = expert_action(env.scene, env.world_state())
            corrupt_obs = env.reset_scene(twin)
            # episode: the scene seed (each probe scene is its own one-step episode)
            clean = Frame(image=clean_obs.image, instruction=clean_obs.instruction, proprio=clean_obs.proprio,
                          action=np.asarray(action, dtype=np.float64), episode=scene.seed, step=0, task=task,
                          views=dict(clean_obs.views))
            corrupt = Frame(image=corrupt_obs.image, instruction=corrupt_obs.instruction, proprio=corrupt_obs.proprio,
                            action=clean.action, episode=scene.seed, step=0, task=task, views=dict(corrupt_obs.views))
            pairs.append((clean, corrupt))
    finally:
        if own:
            env.close()
    return Probe(kind, tuple(pairs), kind)


def discovery_probes(dataset, config, cameras: tuple[str, ...] | None = None) -> list[Probe]:
    """``discover(vla, demos, config, probes=discovery_probes(demos, config))``: the sim probes of a discovery.

    For ``config.method`` activation or attribution: one probe per kind in ``config.probes``, of
    ``config.probe_pairs`` pairs on ``config.probe_task`` (default: the demonstrations' most common task),
    rendered at the demonstrations' image size and with ``cameras`` (default: the demonstrations' own, every
    view a multi-camera folder records) from the scenes of ``probe_seed(config.seed)`` on. For any other
    method: ``[]`` (nothing is rendered).
    """
    from robosteer.circuits.config import PROBE_METHODS

    if config.method not in PROBE_METHODS:
        return []
    task = config.probe_task or Counter(dataset.tasks).most_common(1)[0][0]
    return [sim_probe(kind, task=task, n=config.probe_pairs, seed=probe_seed(config.seed),
                      image_size=dataset.image(0).shape[0], cameras=cameras or tuple(getattr(dataset, "cameras", ())) or None)
            for kind in config.probes]


def discover_in_sim(vla, dataset, config, out=None):
    """``discover_in_sim(vla, demos, config, out=DIR)``: ``circuits.discover.discover`` with the sim probes of
    ``discovery_probes(dataset, config)`` (none for knn / sav / random), rendered in the views ``vla`` takes;
    returns its ``DiscoveryResult``."""
    from robosteer.circuits.config import PROBE_METHODS
    from robosteer.circuits.discover import discover
    from robosteer.sim.cameras import cameras_for_views

    cameras = cameras_for_views(int(vla.config.n_views)) if config.method in PROBE_METHODS else None
    return discover(vla, dataset, config, out=out, probes=discovery_probes(dataset, config, cameras))

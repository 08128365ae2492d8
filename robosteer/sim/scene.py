"""One concrete task instance: objects, plates, instruction, light, table and camera.

``sample_scene(task, seed)`` is pure NumPy (no simulator), so a task instance is
reproducible from (family, variation, seed) alone and can be inspected or tested
without MuJoCo. ``env.SteerEnv`` builds and resets the simulation from a
:class:`SceneSpec`.

Coordinates are metres relative to the centre of the table top: +x away from the
robot, +y to the robot's left, which is the *right* of the agentview image (the
camera faces the robot). Directions in instructions ("left", "right") are as seen in
the image.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from . import language
from .tasks import Task, get_family
from .variations import COLORS, REGIONS, Variation, get_variation

# World y direction of "left" in the agentview image (the camera looks back at the robot).
IMAGE_LEFT_Y = -1.0
DIRECTIONS: dict[str, float] = {"left": IMAGE_LEFT_Y, "right": -IMAGE_LEFT_Y}
PUSH_DISTANCE = 0.08  # metres the pushed object must travel along the named direction
PLATE_RADIUS = 0.055
TABLE_HALF_EXTENT = 0.38  # objects stay this far from the table centre, per axis
MIN_GAP = 0.06  # free space between neighbouring objects, so that open fingers fit
JOINT_NOISE = 0.02  # radians, uniform, on the arm's start configuration
# Agentview camera: position and look-at point (world frame, table top at z=0.8), chosen so
# that at 64 px both the gripper's start pose and the far placement region are in view while
# the view is steep (depth along world x shows as image rows) and the workspace fills the
# frame: a 5 cm cube covers about 8 x 8 pixels (it covered 6 x 6 with the earlier
# (0.45, 0, 1.40) / 45 degree view, which left the lower third of the image empty table).
CAMERA_POS = (0.30, 0.0, 1.50)
CAMERA_TARGET = (-0.03, 0.0, 0.80)
CAMERA_FOVY = 40.0


@dataclass(frozen=True)
class ObjectSpec:
    """One movable object on the table."""

    name: str  # body name prefix in the simulation: obj0, obj1, ...
    role: str  # target | support | reference | twin | distractor
    shape: str  # cube | cylinder | ball
    color: str
    half_size: float  # half edge (cube) or radius (cylinder, ball); cylinders are as tall as wide
    mass: float  # kg
    friction: float  # sliding friction coefficient
    xy: tuple[float, float]  # start position on the table

    @property
    def rgba(self) -> tuple[float, float, float, float]:
        return COLORS[self.color]


@dataclass(frozen=True)
class PlateSpec:
    """A flat coloured disc on the table: a place target (visual only, no collision)."""

    color: str
    xy: tuple[float, float]
    radius: float = PLATE_RADIUS


@dataclass(frozen=True)
class SceneSpec:
    """Everything the simulation needs to set up one task instance."""

    task: Task
    seed: int
    instruction: str
    objects: tuple[ObjectSpec, ...]
    plates: tuple[PlateSpec, ...]
    direction: str | None  # push direction, as seen in the image
    light: str
    table: str
    camera_pos: tuple[float, float, float]
    camera_target: tuple[float, float, float]
    joint_noise: tuple[float, ...]  # added to the arm's start joint angles

    @property
    def layout(self) -> tuple:
        """What the compiled model depends on; scenes with equal layouts share one model."""
        return tuple((o.shape, round(o.half_size, 4)) for o in self.objects) + (len(self.plates),)

    def object(self, role: str) -> ObjectSpec:
        """The first object with this role."""
        for obj in self.objects:
            if obj.role == role:
                return obj
        raise KeyError(f"scene of {self.task} has no object with role {role!r}")

    def index(self, role: str) -> int:
        return [o.role for o in self.objects].index(role)


def _rng(task: Task, seed: int) -> np.random.Generator:
    words = [int(seed), zlib.crc32(task.family.encode()), zlib.crc32(task.variation.encode())]
    return np.random.default_rng(np.random.SeedSequence(words))


def _volume(shape: str, h: float) -> float:
    return {"cube": 8 * h**3, "cylinder": 2 * np.pi * h**3, "ball": 4 / 3 * np.pi * h**3}[shape]


def _pick(rng: np.random.Generator, options, exclude=()) -> str:
    pool = [o for o in options if o not in exclude] or list(options)
    return pool[int(rng.integers(len(pool)))]


class _Placer:
    """Rejection sampling of non-overlapping positions inside a region."""

    def __init__(self, rng: np.random.Generator, region: tuple[float, float, float, float]):
        self.rng, self.region = rng, region
        self.placed: list[tuple[float, float, float]] = []  # (x, y, radius)

    def free(self, x: float, y: float, r: float, gap: float = MIN_GAP) -> bool:
        return all(np.hypot(x - px, y - py) >= r + pr + gap for px, py, pr in self.placed)

    def place(self, r: float, ok=lambda x, y: True, y_range=None, gap: float = MIN_GAP) -> tuple[float, float]:
        x0, x1, y0, y1 = self.region
        y0, y1 = y_range or (y0, y1)
        for _ in range(200):
            x, y = float(self.rng.uniform(x0, x1)), float(self.rng.uniform(y0, y1))
            if self.free(x, y, r, gap) and ok(x, y):
                self.placed.append((x, y, r))
                return x, y
        raise _NoRoom()


def _footprint(shape: str, h: float) -> float:
    return h * 1.2 if shape == "cube" else h  # cubes stand axis-aligned


class _NoRoom(Exception):
    """The objects do not fit in the region with this draw."""


def _place_all(rng, region, family, cast, radii, plate_colors, relational):
    """Positions of plates and objects; raises ``_NoRoom`` when a draw does not fit."""
    placer = _Placer(rng, region)
    direction = side = None
    positions: dict[int, tuple[float, float]] = {}
    if family == "push":
        direction = _pick(rng, tuple(DIRECTIONS))
        sign = DIRECTIONS[direction]
        # leave room to push along the direction
        positions[0] = placer.place(radii[0], ok=lambda x, y: sign * y <= 0.08)
    if relational:
        side = _pick(rng, tuple(DIRECTIONS))
        ref = next(i for i, c in enumerate(cast) if c[0] == "reference")
        twin = next(i for i, c in enumerate(cast) if c[0] == "twin")
        ry = float(rng.uniform(-0.03, 0.03))
        positions[ref] = placer.place(radii[ref], y_range=(ry, ry))
        sign = DIRECTIONS[side]
        for i, s in ((0, sign), (twin, -sign)):
            lo, hi = sorted((ry + s * 0.10, ry + s * 0.15))
            positions[i] = placer.place(radii[i], y_range=(lo, hi), gap=0.02)
    plates = [PlateSpec(color, placer.place(PLATE_RADIUS, gap=0.02)) for color in plate_colors]
    for i in range(len(cast)):
        if i in positions:
            continue
        ok = lambda x, y: True  # noqa: E731
        if direction is not None:
            (tx, ty), sign = positions[0], DIRECTIONS[direction]
            # keep others out of the pusher's approach and of the object's sweep
            ok = lambda x, y, r=radii[i]: not (  # noqa: E731
                abs(x - tx) < r + radii[0] + 0.05 and -(radii[0] + 0.1) < sign * (y - ty) < 0.22
            )
        positions[i] = placer.place(radii[i], ok=ok)
    return direction, side, plates, positions


def sample_scene(task: "Task | str", seed: int, variation: "Variation | None" = None) -> SceneSpec:
    """``sample_scene("place/base", 3)``: the reproducible task instance for this seed.

    ``variation`` overrides the named variation of ``task`` with a custom
    :class:`Variation` (its name is still recorded from ``task``).
    """
    task = Task.parse(task)
    family = get_family(task.family)
    var = variation or get_variation(task.variation)
    vis, lang, spa, envx = var.visual, var.language, var.spatial, var.environment
    rng = _rng(task, seed)

    def new_size(shape: str) -> tuple[float, float, float]:
        h = float(spa.half_sizes[int(rng.integers(len(spa.half_sizes)))])
        mass = 1000.0 * _volume(shape, h) * float(rng.uniform(*spa.mass_scale))
        return h, mass, float(rng.uniform(*spa.friction))

    # Who is on the table: (role, shape, colour).
    target_color = _pick(rng, vis.target_colors)
    target_shape = _pick(rng, vis.target_shapes)
    cast: list[tuple[str, str, str]] = [("target", target_shape, target_color)]
    used = {target_color}
    if family.needs_support:
        color = _pick(rng, vis.other_colors, used)
        used.add(color)
        cast.append(("support", "cube", color))
    n_distractors = vis.n_distractors
    if spa.relational:
        cast.append(("twin", target_shape, target_color))
        color = _pick(rng, vis.other_colors, used)
        used.add(color)
        cast.append(("reference", _pick(rng, vis.other_shapes), color))
        n_distractors = max(0, n_distractors - 1)
    plate_colors = []
    for _ in range(family.n_plates):
        plate_colors.append(_pick(rng, vis.other_colors, used))
        used.add(plate_colors[-1])
    named = {c for _, _, c in cast}  # colours the instruction may refer to
    for _ in range(n_distractors):
        if vis.lookalikes:  # the named colour, in a shape the target does not have
            cast.append(("distractor", _pick(rng, [s for s in vis.other_shapes if s != target_shape]), target_color))
            continue
        # fresh colours first; once they run out, any colour the instruction does not name
        pool = [c for c in vis.other_colors if c not in used] or [c for c in vis.other_colors if c not in named]
        color = _pick(rng, pool or vis.other_colors)
        used.add(color)
        cast.append(("distractor", _pick(rng, vis.other_shapes), color))

    sizes = [new_size(shape) for _, shape, _ in cast]
    radii = [_footprint(shape, h) for (_, shape, _), (h, _, _) in zip(cast, sizes)]

    # Where: restart the whole layout when it does not fit (deterministic, same generator).
    for _ in range(100):
        try:
            direction, side, plates, positions = _place_all(rng, REGIONS[spa.region], family.name, cast, radii, plate_colors, spa.relational)
            break
        except _NoRoom:
            continue
    else:
        raise RuntimeError(f"cannot lay out {task} in region {spa.region!r}; relax the variation")

    objects = tuple(
        ObjectSpec(f"obj{i}", role, shape, color, h, mass, fr, positions[i])
        for i, ((role, shape, color), (h, mass, fr)) in enumerate(zip(cast, sizes))
    )

    # How it is said.
    def phrase(obj: ObjectSpec) -> str:
        return language.object_phrase(obj.color, obj.shape, rng, lang.synonyms)

    target = objects[0]
    obj_text = phrase(target)
    if spa.relational:
        reference = next(o for o in objects if o.role == "reference")
        obj_text = language.relational_phrase(obj_text, side, phrase(reference))
    support = next((o for o in objects if o.role == "support"), None)
    text = language.instruction(
        family.name,
        rng,
        template_set=lang.templates,
        obj=obj_text,
        plate=language.word(plates[0].color, rng, lang.synonyms) if plates else None,
        direction=direction,
        support=phrase(support) if support else None,
    )

    # Around it.
    light = _pick(rng, envx.lights)
    table = _pick(rng, envx.tables)
    cam_pos = np.array(CAMERA_POS) + rng.uniform(-1, 1, 3) * envx.camera_shift
    cam_target = np.array(CAMERA_TARGET) + rng.uniform(-1, 1, 3) * envx.camera_tilt
    joint_noise = rng.uniform(-JOINT_NOISE, JOINT_NOISE, 7)
    return SceneSpec(
        task=task,
        seed=int(seed),
        instruction=text,
        objects=objects,
        plates=tuple(plates),
        direction=direction,
        light=light,
        table=table,
        camera_pos=tuple(float(v) for v in cam_pos),
        camera_target=tuple(float(v) for v in cam_target),
        joint_noise=tuple(float(v) for v in joint_noise),
    )


def counterfactual_scene(scene: SceneSpec) -> SceneSpec:
    """The same scene with its first distractor named instead of the target: one object changes role.

    Everything the simulation builds (objects, positions, sizes, light, camera, start pose) stays as it
    was; only the roles of the target and of the first distractor of the target's shape are exchanged
    and the instruction names the other colour. Recorded beside the original scene, the pair shows the
    same images under two instructions with two different expert trajectories: the only way to tell
    them apart is the instruction's colour word.
    """
    target = scene.object("target")
    other = next((o for o in scene.objects if o.role == "distractor" and o.shape == target.shape), None)
    if other is None:
        raise ValueError(f"{scene.task} seed {scene.seed}: no distractor shaped like the target ({target.shape}) "
                         "to name instead; counterfactual scenes need one")
    # the phrases sample_scene writes without synonyms (no random draw then)
    old, new = (language.object_phrase(o.color, o.shape, rng=None) for o in (target, other))
    if scene.instruction.count(old) != 1:
        raise ValueError(f"{scene.task} seed {scene.seed}: the instruction {scene.instruction!r} does not name "
                         f"{old!r} exactly once (synonyms or relational phrases cannot be swapped)")
    roles = {target.name: "distractor", other.name: "target"}
    # the new target first, as sample_scene orders them (what the predicates and the expert read), renamed in order
    order = [other] + [o for o in scene.objects if o is not other]
    objects = tuple(replace(o, name=f"obj{i}", role=roles.get(o.name, o.role)) for i, o in enumerate(order))
    return replace(scene, objects=objects, instruction=scene.instruction.replace(old, new))


__all__ = ["ObjectSpec", "PlateSpec", "SceneSpec", "counterfactual_scene", "sample_scene", "DIRECTIONS"]

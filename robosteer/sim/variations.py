"""Variation axes: what may change between task instances, as seedable frozen configs.

A :class:`Variation` bundles one setting per axis — visual (colours, shapes,
distractors), linguistic (instruction templates, synonyms), physical/spatial
(placement region, relational references, size, mass, friction) and environment
(lighting, table, camera pose). ``scene.sample_scene`` turns a task family, a
variation and a seed into one concrete, reproducible scene. The named variations in
:data:`VARIATIONS` are the ones the task split (``tasks.py``) refers to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Colour names and their RGBA. The first four are the pretraining palette; the rest are
# held out, to test adaptation to unseen colours (and unseen colour words).
COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.10, 0.10, 1.0),
    "green": (0.10, 0.70, 0.15, 1.0),
    "blue": (0.10, 0.25, 0.90, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "purple": (0.55, 0.15, 0.75, 1.0),
    "orange": (1.00, 0.50, 0.05, 1.0),
    "cyan": (0.10, 0.85, 0.85, 1.0),
}
BASE_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
NOVEL_COLORS: tuple[str, ...] = ("purple", "orange", "cyan")

SHAPES: tuple[str, ...] = ("cube", "cylinder", "ball")

# Placement regions, as (x_min, x_max, y_min, y_max) in metres relative to the centre of
# the table top; +x points away from the robot, +y to the robot's left. "center" is the
# pretraining region; "far" lies beyond it, on the side away from the robot.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "center": (-0.12, 0.08, -0.20, 0.20),
    "far": (0.11, 0.17, -0.20, 0.20),
}

# Light presets: (diffuse rgb, direction xyz, headlight ambient rgb).
LIGHTS: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "default": ((1.0, 1.0, 1.0), (-0.2, -0.2, -1.0), (0.1, 0.1, 0.1)),
    "dim_warm": ((0.55, 0.40, 0.25), (0.4, 0.5, -1.0), (0.05, 0.04, 0.03)),
    "bright_cool": ((0.9, 1.0, 1.25), (0.5, -0.6, -1.0), (0.3, 0.3, 0.35)),
    "dusk": ((0.30, 0.22, 0.15), (0.8, 0.6, -0.45), (0.02, 0.02, 0.02)),
    "magenta": ((1.0, 0.35, 0.85), (-0.6, 0.5, -0.7), (0.12, 0.03, 0.12)),
}

# Table looks: (material, rgba). "ceramic" is robosuite's default table; "wood" uses
# robosuite's dark-wood texture; "plain" is an untextured coloured top.
TABLES: dict[str, tuple[str, tuple[float, float, float, float]]] = {
    "default": ("ceramic", (1.0, 1.0, 1.0, 1.0)),
    "wood": ("wood", (1.0, 1.0, 1.0, 1.0)),
    "dark": ("plain", (0.25, 0.22, 0.20, 1.0)),
}

TEMPLATE_SETS: tuple[str, ...] = ("base", "paraphrase")


def _check_names(kind: str, names, known) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; known: {', '.join(known)}")


def _check_range(name: str, pair: tuple[float, float], low: float) -> None:
    if len(pair) != 2 or not (low <= pair[0] <= pair[1]):
        raise ValueError(f"{name} must be a (min, max) pair with {low} <= min <= max, got {pair!r}")


@dataclass(frozen=True)
class VisualAxis:
    """What the objects look like, and how many there are."""

    target_colors: tuple[str, ...] = BASE_COLORS  # colours the object named in the instruction may take
    other_colors: tuple[str, ...] = BASE_COLORS  # colours of the other objects and of plates
    target_shapes: tuple[str, ...] = ("cube",)  # shapes the named object may take
    other_shapes: tuple[str, ...] = ("cube",)  # shapes of distractors
    n_distractors: int = 1  # objects on the table besides those the task needs
    lookalikes: bool = False  # distractors take the named object's colour in other shapes (only the shape word tells)

    def __post_init__(self) -> None:
        for name in ("target_colors", "other_colors"):
            _check_names("colour", getattr(self, name), COLORS)
        for name in ("target_shapes", "other_shapes"):
            _check_names("shape", getattr(self, name), SHAPES)
        if not self.target_colors or not self.target_shapes or not self.other_shapes:
            raise ValueError("VisualAxis needs at least one target colour, target shape and other shape")
        if len(self.other_colors) < 3:
            raise ValueError("VisualAxis.other_colors needs at least 3 colours so that objects can differ")
        if not 0 <= self.n_distractors <= 3:
            raise ValueError(f"n_distractors must be in [0, 3], got {self.n_distractors}")
        if self.lookalikes and not set(self.other_shapes) - set(self.target_shapes):
            raise ValueError("VisualAxis.lookalikes needs other_shapes that the target cannot take, so that only the "
                             f"shape word tells the objects apart (target_shapes {self.target_shapes}, other_shapes "
                             f"{self.other_shapes})")


@dataclass(frozen=True)
class LanguageAxis:
    """How the instruction is worded."""

    templates: str = "base"  # template set: "base" (one phrasing per family) or "paraphrase" (held-out phrasings)
    synonyms: bool = False  # replace colour and shape words with held-out synonyms ("crimson block")

    def __post_init__(self) -> None:
        _check_names("template set", [self.templates], TEMPLATE_SETS)


@dataclass(frozen=True)
class SpatialAxis:
    """Where objects are, how they are referred to, and their physical properties."""

    region: str = "center"  # placement region name (see REGIONS)
    relational: bool = False  # name the object by its relation to a reference ("the cube left of the green cube")
    half_sizes: tuple[float, ...] = (0.025,)  # half edge / radius choices in metres
    mass_scale: tuple[float, float] = (1.0, 1.0)  # uniform range multiplying the mass at density 1000 kg/m^3
    friction: tuple[float, float] = (0.7, 0.7)  # uniform range of the sliding friction coefficient

    def __post_init__(self) -> None:
        _check_names("region", [self.region], REGIONS)
        if not self.half_sizes or any(not 0.015 <= s <= 0.035 for s in self.half_sizes):
            raise ValueError(f"half_sizes must be in [0.015, 0.035] m (the gripper opens 8 cm), got {self.half_sizes}")
        _check_range("mass_scale", self.mass_scale, 0.1)
        _check_range("friction", self.friction, 0.3)


@dataclass(frozen=True)
class EnvironmentAxis:
    """Everything around the objects: light, table and camera."""

    lights: tuple[str, ...] = ("default",)  # light presets to draw from (see LIGHTS)
    tables: tuple[str, ...] = ("default",)  # table looks to draw from (see TABLES)
    camera_shift: float = 0.0  # max camera position jitter in metres, per axis
    camera_tilt: float = 0.0  # max camera look-at jitter in metres, per axis

    def __post_init__(self) -> None:
        _check_names("light", self.lights, LIGHTS)
        _check_names("table", self.tables, TABLES)
        if not self.lights or not self.tables:
            raise ValueError("EnvironmentAxis needs at least one light and one table")
        if not (0 <= self.camera_shift <= 0.1 and 0 <= self.camera_tilt <= 0.1):
            raise ValueError("camera_shift and camera_tilt must be in [0, 0.1] m")


AXES: tuple[str, ...] = ("visual", "linguistic", "spatial", "environment")


@dataclass(frozen=True)
class Variation:
    """A named point on the variation axes: ``VARIATIONS["novel_color"]``."""

    name: str
    axis: str  # the axis this variation moves away from the base ("base" for the base itself)
    description: str
    visual: VisualAxis = field(default_factory=VisualAxis)
    language: LanguageAxis = field(default_factory=LanguageAxis)
    spatial: SpatialAxis = field(default_factory=SpatialAxis)
    environment: EnvironmentAxis = field(default_factory=EnvironmentAxis)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"variation name must be an identifier, got {self.name!r}")
        if self.axis not in ("base",) + AXES:
            raise ValueError(f"Variation.axis must be 'base' or one of {AXES}, got {self.axis!r}")


def _variations(*items: Variation) -> dict[str, Variation]:
    return {v.name: v for v in items}


VARIATIONS: dict[str, Variation] = _variations(
    Variation("base", "base", "pretraining palette of 4 colours, cubes, 1 distractor, base phrasing"),
    Variation(
        "novel_color",
        "visual",
        "the named object has a colour never seen in pretraining (purple, orange, cyan)",
        visual=VisualAxis(target_colors=NOVEL_COLORS),
    ),
    Variation(
        "novel_shape",
        "visual",
        "the named object is a cylinder or a ball instead of a cube",
        visual=VisualAxis(target_shapes=("cylinder", "ball")),
    ),
    Variation(
        "novel_form",
        "visual",
        "every object is a cylinder or a ball, larger or smaller than the 5 cm cubes of pretraining (3.6 or 6.4 cm)",
        visual=VisualAxis(target_shapes=("cylinder", "ball"), other_shapes=("cylinder", "ball")),
        spatial=SpatialAxis(half_sizes=(0.018, 0.032)),
    ),
    Variation(
        "distractors",
        "visual",
        "three distractors of mixed shapes instead of one cube",
        visual=VisualAxis(n_distractors=3, other_shapes=("cube", "cylinder", "ball")),
    ),
    Variation(
        "lookalikes",
        "visual",
        "three distractors of the named object's colour in other shapes: only the shape word names the target",
        visual=VisualAxis(n_distractors=3, other_shapes=("cylinder", "ball"), lookalikes=True),
    ),
    Variation(
        "paraphrase",
        "linguistic",
        "held-out instruction templates and synonyms (\"grab the crimson block and raise it\")",
        language=LanguageAxis(templates="paraphrase", synonyms=True),
    ),
    Variation(
        "relational",
        "spatial",
        "two objects share the named colour; the instruction picks one by its side of a reference object",
        spatial=SpatialAxis(relational=True),
    ),
    Variation(
        "far_region",
        "spatial",
        "objects are placed in a table region beyond the pretraining region",
        spatial=SpatialAxis(region="far"),
    ),
    Variation(
        "physics",
        "spatial",
        "smaller or larger objects, 0.5-3x mass, 0.4-1.2 friction",
        spatial=SpatialAxis(half_sizes=(0.02, 0.03), mass_scale=(0.5, 3.0), friction=(0.4, 1.2)),
    ),
    Variation(
        "lighting",
        "environment",
        "dim warm or bright cool light from another direction",
        environment=EnvironmentAxis(lights=("dim_warm", "bright_cool")),
    ),
    Variation(
        "harsh_light",
        "environment",
        "dim dusk light low from the side, or a magenta light that shifts every colour",
        environment=EnvironmentAxis(lights=("dusk", "magenta")),
    ),
    Variation(
        "table",
        "environment",
        "wooden or dark table top instead of the white ceramic one",
        environment=EnvironmentAxis(tables=("wood", "dark")),
    ),
    Variation(
        "camera_shift",
        "environment",
        "agentview camera moved and re-aimed by up to 4 cm",
        environment=EnvironmentAxis(camera_shift=0.04, camera_tilt=0.04),
    ),
    Variation(
        "camera_move",
        "environment",
        "agentview camera moved and re-aimed by up to 10 cm",
        environment=EnvironmentAxis(camera_shift=0.1, camera_tilt=0.1),
    ),
)


def get_variation(name: str) -> Variation:
    """``get_variation("paraphrase")``; an unknown name lists the known ones."""
    try:
        return VARIATIONS[name]
    except KeyError:
        raise ValueError(f"unknown variation {name!r}; known: {', '.join(VARIATIONS)}") from None

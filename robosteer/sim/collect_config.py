"""``CollectConfig``: what a collection run records and how (``collect.py`` runs it).

Kept apart from ``collect.py`` (which loads the simulator) so that ``robosteer collect``
declares its flags from these fields (``robosteer.config_cli``) without loading MuJoCo or numpy.

Usage::

    config = CollectConfig(tasks=("lift/base",), episodes=100, workers=2)   # tasks canonicalised: "lift" -> "lift/base"
    config = CollectConfig(tasks=("lift/base",), cameras=("agentview", "wrist"))  # also record the wrist view
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .cameras import SINGLE_VIEW, VIEWS
from .tasks import Task


@dataclass(frozen=True)
class CollectConfig:
    """What to collect and how."""

    tasks: tuple[str, ...] = field(metadata={"help": "task names, family/variation"})
    episodes: int = field(default=10, metadata={"help": "expert attempts per task (seeds seed..seed+N-1)"})
    seed: int = field(default=0, metadata={"help": "first seed; task instance k uses seed + k"})
    workers: int = field(default=1, metadata={"help": "worker processes (one simulator each)"})
    image_size: int = field(default=64, metadata={"help": "square agentview image side in pixels"})
    action_noise: float = field(default=0.0, metadata={
        "help": "std of Gaussian noise on the executed arm action (labels stay clean)"})
    start_jitter: float = field(default=0.0, metadata={
        "help": "before recording, move the arm up to this many metres from its start pose along x and y (half along "
                "z), so the start position says nothing about where the object is (0: off)"})
    counterfactual: bool = field(default=False, metadata={"help":
        "record each seeded scene with its distractor named instead of the target (same scene, the other cube in "
        "the instruction): paired with a plain collection of the same seeds, only the colour word tells them apart"})
    keep_failures: bool = field(default=False, metadata={"help": "also save episodes where the expert failed"})
    cameras: tuple[str, ...] | None = field(default=None, metadata={"choices": VIEWS, "help":
        "views to record, main first: agentview,wrist adds images_wrist/ (default: the agentview alone)"})

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("CollectConfig.tasks is empty")
        object.__setattr__(self, "tasks", tuple(str(Task.parse(t)) for t in self.tasks))
        if self.episodes <= 0 or self.workers <= 0:
            raise ValueError("episodes and workers must be positive")
        if not 0 <= self.action_noise <= 1:
            raise ValueError(f"action_noise must be in [0, 1], got {self.action_noise}")
        if not 0 <= self.start_jitter <= 0.2:
            raise ValueError(f"start_jitter must be in [0, 0.2] metres, got {self.start_jitter}")
        from .env import SimConfig  # loads numpy: only when a config is made, not when its flags are declared

        sim = SimConfig(image_size=self.image_size, cameras=self.cameras or SINGLE_VIEW)  # validates size and views
        # canonical: None for the agentview alone (what every folder before cameras existed holds), else the tuple
        object.__setattr__(self, "cameras", sim.cameras if len(sim.cameras) > 1 else None)

    @property
    def views(self) -> tuple[str, ...]:
        """The views recorded, main first: ``("agentview",)`` or ``("agentview", "wrist")``."""
        return self.cameras or SINGLE_VIEW

    def settings(self) -> dict:
        """The fields as recorded in a demo folder's meta.json (``cameras`` only with several views)."""
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if values["cameras"] is None:
            del values["cameras"]  # single-camera folders stay as they were before cameras existed
        if not values["start_jitter"]:
            del values["start_jitter"]  # likewise for folders recorded from the standard start
        if not values["counterfactual"]:
            del values["counterfactual"]  # and for folders of the scenes as sampled
        return values

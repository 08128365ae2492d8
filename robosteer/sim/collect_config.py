"""``CollectConfig``: what a collection run records and how (``collect.py`` runs it).

Kept apart from ``collect.py`` (which loads the simulator) so that ``robosteer collect``
declares its flags from these fields (``robosteer.config_cli``) without loading MuJoCo or numpy.

Usage::

    config = CollectConfig(tasks=("lift/base",), episodes=100, workers=2)   # tasks canonicalised: "lift" -> "lift/base"
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    keep_failures: bool = field(default=False, metadata={"help": "also save episodes where the expert failed"})

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("CollectConfig.tasks is empty")
        object.__setattr__(self, "tasks", tuple(str(Task.parse(t)) for t in self.tasks))
        if self.episodes <= 0 or self.workers <= 0:
            raise ValueError("episodes and workers must be positive")
        if not 0 <= self.action_noise <= 1:
            raise ValueError(f"action_noise must be in [0, 1], got {self.action_noise}")
        from .env import SimConfig  # loads numpy: only when a config is made, not when its flags are declared

        SimConfig(image_size=self.image_size)  # validates the size

"""Opening a demonstration folder by what it holds: the one opener every command line uses.

- ``open_demos(path)``: a LeRobot folder (it has ``meta/info.json``) opens as a ``LeRobotDataset``,
  anything else as a robosteer demo folder (``DemoDataset``, what ``robosteer collect`` writes);
  a missing folder is a ``FileNotFoundError`` naming it;
- ``first_episodes(dataset, n)``: a view of the frames of a dataset's first ``n`` episodes
  (``robosteer discover --max-episodes``).

Usage::

    demos = open_demos("demos/lift-novel")          # or a LeRobot folder
    few = first_episodes(demos, 5)                  # len, [i], image(i), tasks of episodes 0..4
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def open_demos(path: str | Path):
    """``open_demos("demos/task")`` -> the folder's ``FrameDataset`` (LeRobot or robosteer demo format)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"demonstration folder not found: {root}")
    if (root / "meta" / "info.json").is_file():
        from .lerobot import LeRobotDataset

        return LeRobotDataset(root)
    from .dataset import DemoDataset

    return DemoDataset(root)


def first_episodes(dataset, n: int) -> "EpisodeSubset":
    """``first_episodes(demos, 5)``: the frames of the ``n`` lowest episode ids of ``dataset``, in order."""
    keep = np.unique(dataset.episode_index)[:n]
    return EpisodeSubset(dataset, np.flatnonzero(np.isin(dataset.episode_index, keep)))


class EpisodeSubset:
    """A view of some frames of a FrameDataset (what discovery reads: len, [i], tasks, image)."""

    def __init__(self, base, indices) -> None:
        self.base, self.indices = base, [int(i) for i in indices]
        self.tasks = [base.tasks[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]

    def image(self, i: int):
        return self.base.image(self.indices[i])

"""Loader of the demonstrations that ``robosteer collect`` writes (see demo_format.py).

``DemoDataset(path)`` reads the step table into memory and memory-maps each
episode's image array, so even large datasets open instantly::

    ds = DemoDataset("demos/pretrain")
    frame = ds[0]                      # Frame(image, instruction, action, proprio, keyframes, ...)
    ds.cameras                         # () for one camera; ("agentview", "wrist") in a multi-camera folder
    frame.images                       # every view in that order (frame.views: camera -> image)
    for batch in ds.batches(64, seed=epoch): ...
    ds.statistics                      # OpenVLA dataset_statistics dict
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .demo_format import DATASET_NAME, DemoFormatError, load_images, meta_cameras, read_episodes, read_meta, read_steps
from .frames import FrameDataset
from .keyframes import KEYFRAME_NAMES


class DemoDataset(FrameDataset):
    """Frames of a robosteer demo folder; see the module docstring."""

    def __init__(self, root) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        steps = read_steps(self.root)
        self.episode_rows = {row["episode"]: row for row in read_episodes(self.root)}
        missing = sorted(set(np.unique(steps["episode"]).tolist()) - set(self.episode_rows))
        if missing:
            raise DemoFormatError(self.root / "episodes.parquet", "episode", f"no row for episodes {missing[:5]}")
        self.image_size = tuple(self.meta["image_size"])
        super().__init__(
            episode=steps["episode"],
            step=steps["step"],
            action=steps["action"],
            proprio=steps["proprio"],
            keyframes={k: steps[k] for k in KEYFRAME_NAMES},
            instructions=steps["instruction"],
            tasks=steps["task"],
        )
        self.success = np.asarray(steps["success"], dtype=bool)
        self.states = steps.get("state")  # (N, 6) privileged target/goal positions, or None (older demos)
        self.phases = steps["phase"]
        self._images: dict[int, np.ndarray] = {}
        self.cameras = meta_cameras(self.meta)  # () for a single-camera folder
        self._views: dict[tuple[str, int], np.ndarray] = {}

    @property
    def statistics(self) -> dict:
        """OpenVLA-layout statistics, ``{"robosteer_sim": {"action": ..., "proprio": ...}}``."""
        return self.meta["dataset_statistics"]

    @property
    def dataset_name(self) -> str:
        return DATASET_NAME

    def episode_images(self, episode: int) -> np.ndarray:
        """(T, H, W, 3) uint8 images of one episode (memory-mapped)."""
        if episode not in self._images:
            if episode not in self.episode_rows:
                raise IndexError(f"episode {episode} not in {self.root}")
            self._images[episode] = load_images(self.root, self.episode_rows[episode], self.image_size)
        return self._images[episode]

    def image(self, i: int) -> np.ndarray:
        return np.array(self.episode_images(int(self.episode_index[i]))[self.step_index[i]])

    def episode_views(self, episode: int, camera: str) -> np.ndarray:
        """(T, H, W, 3) uint8 images of one camera of one episode (memory-mapped)."""
        if self.cameras and camera == self.cameras[0]:
            return self.episode_images(episode)
        if camera not in self.cameras:
            raise ValueError(f"no camera {camera!r} in {self.root}; cameras: {list(self.cameras) or [self.meta.get('camera')]}")
        if (camera, episode) not in self._views:
            if episode not in self.episode_rows:
                raise IndexError(f"episode {episode} not in {self.root}")
            self._views[camera, episode] = load_images(self.root, self.episode_rows[episode], self.image_size, camera)
        return self._views[camera, episode]

    def view(self, i: int, camera: str) -> np.ndarray:
        return np.array(self.episode_views(int(self.episode_index[i]), camera)[self.step_index[i]])

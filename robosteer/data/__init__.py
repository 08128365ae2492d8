"""Demonstration data: one frame type, the on-disk demo format, LeRobot folders, statistics.

Below the simulator and the model: numpy, pyarrow and JSON only. The simulator writes demos
with ``DemoWriter``; training, recording and probes read ``Frame`` objects from a ``FrameDataset``.

- ``schema.py``: the names of the action, proprio and state vectors;
- ``frames.py``: ``Frame`` (one observation + instruction + action) and ``FrameDataset``;
- ``demo_format.py``: the demo folder format (``DemoWriter``, readers with clear errors);
- ``dataset.py`` / ``lerobot.py``: ``DemoDataset`` / ``LeRobotDataset`` frame loaders;
- ``folders.py``: ``open_demos(path)``, either loader by what the folder holds;
- ``chunks.py``: ``ActionChunks``, each frame's next K actions (for chunking models);
- ``keyframes.py``: keyframe flags; ``statistics.py``: OpenVLA-layout dataset statistics.
"""

from __future__ import annotations

from robosteer.lazy import lazy_exports

_EXPORTS = {
    "ActionChunks": "robosteer.data.chunks",
    "Frame": "robosteer.data.frames",
    "FrameDataset": "robosteer.data.frames",
    "check_frame": "robosteer.data.frames",
    "DemoDataset": "robosteer.data.dataset",
    "LeRobotDataset": "robosteer.data.lerobot",
    "open_demos": "robosteer.data.folders",
    "first_episodes": "robosteer.data.folders",
    "DemoWriter": "robosteer.data.demo_format",
    "dataset_statistics": "robosteer.data.statistics",
    "keyframe_flags": "robosteer.data.keyframes",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""Franka Panda simulation suite: tasks, variations, experts, demos and closed-loop evaluation.

Built on robosuite + MuJoCo with offscreen EGL rendering on the CPU. Importing this
package loads neither: the names below are resolved on first use.

- ``tasks.py``: task families, ``Task("lift", "paraphrase")``, the named ``SPLITS``
- ``variations.py``: the variation axes as frozen configs and the named ``VARIATIONS``
- ``scene.py``: ``sample_scene(task, seed)``, one reproducible task instance
- ``env.py``: ``make_env(SimConfig())`` -> ``SteerEnv`` with ``reset_task``/``act``/``success``
- ``expert.py``: ``ScriptedExpert``; ``collect.py``: ``collect(CollectConfig(...), out)``
- ``dataset.py`` / ``lerobot.py``: ``DemoDataset`` / ``LeRobotDataset`` frame loaders
- ``evaluate.py``: ``evaluate(policy, task, episodes=50)`` with Wilson intervals
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Task": "tasks", "Split": "tasks", "SPLITS": "tasks", "FAMILIES": "tasks", "get_split": "tasks", "all_tasks": "tasks",
    "Variation": "variations", "VARIATIONS": "variations", "get_variation": "variations",
    "SceneSpec": "scene", "sample_scene": "scene",
    "SimConfig": "env", "Observation": "env", "make_env": "env",
    "ScriptedExpert": "expert", "expert_action": "expert",
    "run_episode": "rollout", "Episode": "rollout",
    "CollectConfig": "collect", "collect": "collect", "measure_expert": "collect",
    "DemoDataset": "dataset", "LeRobotDataset": "lerobot", "Frame": "frames", "FrameDataset": "frames",
    "evaluate": "evaluate", "EvalResult": "evaluate", "wilson_interval": "evaluate",
    "load_policy": "policies", "is_success": "predicates", "WorldState": "predicates",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

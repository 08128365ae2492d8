"""Franka Panda simulation suite: tasks, variations, experts, demos and closed-loop evaluation.

Built on robosuite + MuJoCo with offscreen EGL rendering on the CPU. Importing this
package loads neither: the names below are resolved on first use.

- ``tasks.py``: task families, ``Task("lift", "paraphrase")``, the named ``SPLITS``
- ``variations.py``: the variation axes as frozen configs and the named ``VARIATIONS``
- ``scene.py``: ``sample_scene(task, seed)``, one reproducible task instance
- ``env.py``: ``make_env(SimConfig())`` -> ``SteerEnv`` with ``reset_task``/``act``/``success``
- ``expert.py``: ``ScriptedExpert``; ``collect.py``: ``collect(CollectConfig(...), out)`` and
  ``measure_policy(policy_factory, tasks, workers=2)``
- ``evaluate.py``: ``evaluate(policy, task, episodes=50)`` with Wilson intervals (``robosteer.intervals``)

The simulator runs any policy callable it is given (``policy(image, instruction, proprio) -> action``);
it loads none itself apart from its own scripted expert.

The demonstrations it writes are read by ``robosteer.data`` (frames, demo format, LeRobot).
"""

from __future__ import annotations

from robosteer.lazy import lazy_exports

_EXPORTS = {k: f"robosteer.sim.{v}" for k, v in {
    "Task": "tasks", "Split": "tasks", "SPLITS": "tasks", "FAMILIES": "tasks", "get_split": "tasks", "all_tasks": "tasks",
    "Variation": "variations", "VARIATIONS": "variations", "get_variation": "variations",
    "SceneSpec": "scene", "sample_scene": "scene",
    "SimConfig": "env", "Observation": "env", "make_env": "env",
    "ScriptedExpert": "expert", "expert_action": "expert",
    "run_episode": "rollout", "Episode": "rollout",
    "CollectConfig": "collect_config", "collect": "collect", "measure_expert": "collect", "measure_policy": "collect",
    "evaluate": "evaluate", "EvalResult": "evaluate",
    "is_success": "predicates", "WorldState": "predicates",
}.items()}  # fmt: skip

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

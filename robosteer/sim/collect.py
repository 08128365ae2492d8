"""Collecting scripted-expert demonstrations, in parallel over CPU cores.

``collect(CollectConfig(tasks=("lift/base",), episodes=100, workers=2), "demos/lift")``
runs the expert on seeds ``seed..seed+episodes-1`` of every task, keeps the
successful episodes (or all, with ``keep_failures``) and writes them in the format of
``demo_format.py``, every view of ``config.cameras`` included. Each worker process owns
one env; episodes come back in job order, so a dataset is reproducible whatever the
worker count.

``measure_policy(policy_factory, tasks, workers=2)`` runs any policy the same way: the
simulator does not load policies, it is given a picklable zero-argument factory that each
worker calls once (``ScriptedExpert`` itself is one).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from tqdm.auto import tqdm

from ..data.demo_format import DemoWriter
from .cameras import own_cameras
from .collect_config import CollectConfig
from .env import SimConfig, make_env
from .evaluate import EpisodeRecord, EvalResult
from .expert import ScriptedExpert
from .rollout import Episode, run_episode
from .tasks import EVAL_SEED, Task

log = logging.getLogger(__name__)


@dataclass
class CollectReport:
    """Per-task expert outcomes of a collection run."""

    results: dict[str, EvalResult] = field(default_factory=dict)
    saved_episodes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [r.summary() for r in self.results.values()]
        lines.append(f"saved {self.saved_episodes} episodes in {self.seconds:.1f} s")
        return "\n".join(lines)


# ---- worker processes ----------------------------------------------------------------
_WORKER_ENV = None
_WORKER_POLICY = None

PolicyFactory = Callable[[], Callable]  # picklable, zero arguments, returns a policy callable


def _init_worker(config: SimConfig, policy_factory: PolicyFactory = ScriptedExpert) -> None:
    global _WORKER_ENV, _WORKER_POLICY
    _WORKER_ENV = make_env(config)
    _WORKER_POLICY = policy_factory()


def _check_factory(policy_factory) -> None:
    if isinstance(policy_factory, (str, bytes)) or not callable(policy_factory):
        raise ValueError(f"policy_factory must be a picklable zero-argument callable that returns a policy "
                         f"(e.g. ScriptedExpert), got {policy_factory!r}")


def _policy_name(policy_factory) -> str:
    if policy_factory is ScriptedExpert:
        return "expert"
    return str(getattr(policy_factory, "name", None) or getattr(policy_factory, "__name__", "policy"))


def _run_job(job: tuple[str, int, bool, float, float, bool]) -> Episode:
    task, seed, record, noise, jitter, counterfactual = job
    return run_episode(_WORKER_ENV, task, seed, _WORKER_POLICY, record=record, action_noise=noise, start_jitter=jitter,
                       counterfactual=counterfactual)


def run_expert_episodes(
    jobs: list[tuple[str, int]], config: SimConfig, *, workers: int = 1, record: bool = False,
    action_noise: float = 0.0, progress: bool = True, desc: str = "expert",
    policy_factory: PolicyFactory = ScriptedExpert, start_jitter: float = 0.0, counterfactual: bool = False,
) -> Iterator[Episode]:  # fmt: skip
    """Run the policy ``policy_factory()`` makes (one per worker) on (task, seed) jobs, in job order."""
    _check_factory(policy_factory)
    full = [(str(task), int(seed), record, action_noise, start_jitter, counterfactual) for task, seed in jobs]
    bar = tqdm(total=len(full), desc=desc, disable=not progress)
    if workers == 1:
        _init_worker(config, policy_factory)
        try:
            for job in full:
                yield _run_job(job)
                bar.update()
        finally:
            _WORKER_ENV.close()
    else:
        # spawn, not fork: each worker needs its own OpenGL context
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(config, policy_factory)) as pool:
            for episode in pool.imap(_run_job, full, chunksize=1):
                yield episode
                bar.update()
    bar.close()


def _record(results: dict[str, EvalResult], ep: Episode) -> None:
    results.setdefault(str(ep.task), EvalResult(str(ep.task))).episodes.append(
        EpisodeRecord(ep.seed, ep.instruction, ep.success, ep.length)
    )


def collect(config: CollectConfig, out_dir) -> CollectReport:
    """Collect expert demos into ``out_dir``; returns the expert's per-task success."""
    start = time.perf_counter()
    sim = SimConfig(image_size=config.image_size, cameras=config.views)
    jobs = [(t, config.seed + k) for t in config.tasks for k in range(config.episodes)]
    report = CollectReport()
    writer = DemoWriter(out_dir, image_size=config.image_size, camera=sim.camera, control_freq=sim.control_freq,
                        cameras=sim.cameras if len(sim.cameras) > 1 else None)
    episodes = run_expert_episodes(
        jobs, sim, workers=config.workers, record=True, action_noise=config.action_noise, desc="collect",
        start_jitter=config.start_jitter, counterfactual=config.counterfactual,
    )
    for ep in episodes:
        _record(report.results, ep)
        if ep.success or config.keep_failures:
            writer.add(ep)
    report.saved_episodes = len(writer.episodes)
    if report.saved_episodes == 0:
        raise ValueError(f"the expert succeeded in none of {len(jobs)} episodes; nothing to write to {out_dir}")
    writer.close(
        {
            "collect_config": config.settings(),
            "expert_success": {t: r.success_rate for t, r in report.results.items()},
        }
    )
    report.seconds = time.perf_counter() - start
    log.info("collected %d episodes into %s in %.1f s", report.saved_episodes, out_dir, report.seconds)
    return report


def measure_expert(tasks, *, episodes: int = 50, seed: int = 0, workers: int = 1, progress: bool = True) -> dict[str, EvalResult]:
    """Expert success per task over ``episodes`` seeds, without rendering (fast)."""
    return measure_policy(ScriptedExpert, tasks, episodes=episodes, seed=seed, workers=workers, progress=progress,
                          config=SimConfig(render=False))


def measure_policy(policy_factory: PolicyFactory, tasks, *, episodes: int = 50, seed: int = EVAL_SEED,
                   workers: int = 1, config: SimConfig | None = None, progress: bool = True) -> dict[str, EvalResult]:
    """``measure_policy(ScriptedExpert, ["lift/base"], episodes=50, workers=2)``: success per task.

    ``policy_factory`` is a picklable zero-argument callable returning a policy; each worker process
    (or this process, with one worker) calls it once. Its ``name`` attribute, if any, labels the progress bar;
    without ``config`` the views rendered are those its ``cameras`` attribute names (``cameras.own_cameras``).
    """
    _check_factory(policy_factory)
    jobs = [(str(Task.parse(t)), seed + k) for t in tasks for k in range(episodes)]
    results: dict[str, EvalResult] = {}
    config = config or SimConfig(cameras=own_cameras(policy_factory))
    for ep in run_expert_episodes(jobs, config, workers=workers, progress=progress,
                                  desc=f"success of {_policy_name(policy_factory)}", policy_factory=policy_factory):
        _record(results, ep)
    return results

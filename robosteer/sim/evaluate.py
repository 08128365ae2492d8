"""Closed-loop rollout evaluation of a policy, with a Wilson confidence interval.

``evaluate(policy, "lift/paraphrase", episodes=50)`` runs the seeded task instances
``seed, seed+1, ...`` and returns an :class:`EvalResult`: success rate, 95% Wilson
interval and per-episode records; optionally it writes a GIF or MP4 per episode (with
several cameras, ``SimConfig(cameras=("agentview", "wrist"))``, every view side by side).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..intervals import wilson_interval
from .cameras import own_cameras
from .env import SimConfig, make_env
from .rollout import run_episode
from .tasks import EVAL_SEED, Task, get_family

log = logging.getLogger(__name__)


@dataclass
class EpisodeRecord:
    seed: int
    instruction: str
    success: bool
    steps: int
    video: str | None = None


@dataclass
class EvalResult:
    """Outcome of ``evaluate``: rate, 95% Wilson interval and one record per episode."""

    task: str
    episodes: list[EpisodeRecord] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.episodes)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    def summary(self) -> str:
        low, high = self.ci95
        return f"{self.task}: success {self.success_rate:.3f} ({self.successes}/{self.n}), 95% Wilson CI [{low:.3f}, {high:.3f}]"

    def to_frame(self):
        """Per-episode records as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame([e.__dict__ for e in self.episodes])


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import imageio.v2 as imageio

    if path.suffix == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
        return
    try:
        imageio.mimsave(path, frames, fps=fps)
    except Exception as err:  # imageio raises backend-specific errors when ffmpeg is missing
        raise ValueError(f"cannot write {path} ({err}); MP4 needs imageio-ffmpeg, or use video_format='gif'") from None


def evaluate(
    policy,
    task: "Task | str",
    *,
    episodes: int = 50,
    seed: int = EVAL_SEED,
    horizon: int | None = None,
    config: SimConfig | None = None,
    env=None,
    video_dir=None,
    video_format: str = "gif",
    progress: bool = True,
) -> EvalResult:
    """``evaluate(policy, "lift/base", episodes=50)``: success rate over seeds ``seed..seed+episodes-1``.

    ``policy(image, instruction, proprio) -> (7,)`` action; ``reset()`` and ``attach(env)``
    are called per episode when the policy has them (with several cameras ``image`` is the tuple of
    views, see ``rollout.py``). Pass ``env`` to reuse one. Without ``config`` (and ``env``) the views
    rendered are the policy's own (``cameras.own_cameras``: its ``cameras`` attribute, else the agentview).
    """
    task = Task.parse(task)
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    if video_format not in ("gif", "mp4"):
        raise ValueError(f"video_format must be 'gif' or 'mp4', got {video_format!r}")
    own_env = env is None
    env = env or make_env(config or SimConfig(cameras=own_cameras(policy)))
    result = EvalResult(str(task))
    video_root = Path(video_dir) if video_dir else None
    if video_root:
        video_root.mkdir(parents=True, exist_ok=True)
    # a bar over steps, not episodes: a slow policy shows life within its first episode
    limit = horizon or get_family(task.family).horizon
    bar = tqdm(total=episodes * limit, desc=f"eval {task}", unit="step", disable=not progress, leave=False)
    try:
        for k, s in enumerate(range(seed, seed + episodes)):
            frames: list | None = [] if video_root else None
            bar.set_postfix_str(f"episode {k + 1}/{episodes}" + (f", success {result.success_rate:.2f}" if k else ""))
            ep = run_episode(env, task, s, policy, horizon=horizon, frames=frames, on_step=lambda _: bar.update())
            bar.update(limit - ep.length)  # an episode that succeeds early skips the rest of its horizon
            record = EpisodeRecord(s, ep.instruction, ep.success, ep.length)
            if video_root and frames and frames[0] is not None:
                path = video_root / f"{task.family}_{task.variation}_seed{s:05d}.{video_format}"
                _write_video(path, frames, env.config.control_freq)
                record.video = str(path)
            result.episodes.append(record)
    finally:
        bar.close()
        if own_env:
            env.close()
    log.debug(result.summary())  # the caller prints or returns it: at INFO it would show twice on a terminal
    return result

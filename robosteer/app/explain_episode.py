"""``robosteer explain``: one closed-loop episode of a policy, explained step by step, as an offline HTML viewer.

The policy runs in the simulator as ``robosteer evaluate`` runs it (``sim.rollout.run_episode``); at every
control step (or every k-th) ``robosteer.explain`` reads the same observation: each LLM head's direct effect
on the action and its attention over the camera patches. A ``policy.json`` with an adapter is explained
against its base (``explain(..., base=)``): base vs steered actions, per-head changes, and a heads adapter's
heads starred. ``DIR/viewer.html`` is the page (``explanation.viewer``), ``DIR/explain.json`` its data.

This module is the command line's too: only the standard library and light config modules are imported at
module level (``robosteer --help`` stays instant); the simulator, torch and plotly load inside the functions.

Usage::

    robosteer explain --policy default --task lift --seed 0 --out runs/explain
    robosteer explain --policy runs/x/policy.json --task lift/novel_color --seed 3 --every 2 --out runs/x/explain
    result = explain_episode(ExplainEpisodeConfig(task="lift", out_dir="runs/explain", steps=20))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from robosteer.config_cli import ConfigArguments
from robosteer.sim.cameras import VIEWS, check_cameras
from robosteer.sim.tasks import Task
from robosteer.sites import Head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainEpisodeConfig:
    """One explained episode; each field's help is also ``robosteer explain``'s."""

    task: str = field(metadata={"help": "task to run: family or family/variation (robosteer tasks lists them)"})
    out_dir: str = field(metadata={"help": "output folder: viewer.html and explain.json"})
    policy: str = field(default="default", metadata={"help": "'default', a checkpoint folder, or a policy.json; "
                                                      "with an adapter, its base is explained too (base vs steered)"})
    seed: int = field(default=0, metadata={"help": "the episode's seed (the scene), >= 0"})
    steps: int | None = field(default=None, metadata={"help": "stop after this many control steps (default: the "
                                                               "task family's horizon)"})
    every: int = field(default=1, metadata={"help": "explain every K-th control step (1: every step)"})
    head: str | None = field(default=None, metadata={"help": "LLM head whose attention is shown first, e.g. llm.L3H1 "
                                                              "(default: each step's top head)"})
    top: int = field(default=10, metadata={"help": "heads listed per step, by summed |direct effect| over the "
                                                   "action dims"})
    mask: str | None = field(default=None, metadata={"help": "a head mask JSON whose heads are starred (default: "
                                                             "a heads adapter's own heads)"})
    cameras: tuple[str, ...] | None = field(default=None, metadata={"choices": VIEWS, "help":
        "views to render, main first; the policy must take that many (its n_views) (default: the policy's own "
        "views, agentview,wrist for a two-view policy)"})
    image_size: int = field(default=64, metadata={"help": "square camera image side in pixels"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", str(Task.parse(self.task)))  # ValueError naming the known tasks
        if not self.out_dir:
            raise ValueError("out_dir is empty: name the folder for viewer.html and explain.json")
        if not self.policy:
            raise ValueError("policy is empty: give 'default', a checkpoint folder or a policy.json")
        if self.policy == "expert":
            raise ValueError("the scripted expert has no attention heads to explain; give a VLA policy ('default', "
                             "a checkpoint folder or a policy.json)")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 (or None for the task's horizon), got {self.steps}")
        if self.every < 1 or self.top < 1:
            raise ValueError(f"every and top must be >= 1, got every={self.every}, top={self.top}")
        if self.head is not None:
            head = Head.parse(self.head, default_tower="llm")  # ValueError for a malformed name
            if head.tower != "llm":
                raise ValueError(f"head {self.head!r}: only LLM heads read the action directly; name one like llm.L3H1")
            object.__setattr__(self, "head", str(head))
        if self.cameras is not None:  # None: the policy's own views (explain_episode reads them from the model)
            object.__setattr__(self, "cameras", check_cameras(self.cameras, "cameras"))
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {self.image_size}")


@dataclass(frozen=True)
class ExplainedEpisode:
    """What ``explain_episode`` wrote, and the rollout it drew (an ``explanation.viewer.ExplainedRollout``)."""

    viewer: Path  # DIR/viewer.html
    record: Path  # DIR/explain.json
    rollout: object


@dataclass
class PolicyModels:
    """A policy to run, the model it explains, and (for an adapter) the base model and the heads to star."""

    policy: object  # the VLAPolicy the simulator runs (adapter merged)
    vla: object  # its model
    base: object | None = None  # the base model an adapter is compared with
    base_name: str | None = None
    highlight: tuple[str, ...] = ()
    highlight_label: str = "adapter heads"


def load_models(spec: str, mask: str | None = None) -> PolicyModels:
    """``load_models("runs/x/policy.json")``: the steered policy, and its base when the file names an adapter."""
    from robosteer.app.policy import load_policy, read_policy_file

    base_path, adapter = read_policy_file(spec) if spec.endswith(".json") else (spec, None)
    policy = load_policy(spec)
    models = PolicyModels(policy=policy, vla=policy.vla)
    if adapter is not None:
        from robosteer.models import load_vla

        models.base, models.base_name = load_vla(base_path).eval(), str(base_path)
        models.highlight, models.highlight_label = _adapter_heads(adapter)
    if mask is not None:
        from robosteer.masks import HeadMask

        heads = HeadMask.from_json(mask, layout=models.vla.head_layout).heads
        models.highlight, models.highlight_label = _llm_heads(heads, f"the heads of mask {mask}")
    return models


def _llm_heads(heads, label: str) -> tuple[tuple[str, ...], str]:
    llm = tuple(str(h) for h in heads if Head.parse(h).tower == "llm")
    others = len(heads) - len(llm)
    return llm, label + (f" ({others} vision head{'s' if others > 1 else ''} not shown)" if others else "")


def _adapter_heads(adapter: Path) -> tuple[tuple[str, ...], str]:
    """A heads adapter's heads (a LoRA adapter changes every head: none are starred)."""
    from robosteer.train.adapters import HEADS_META, read_heads_adapter_meta

    if not (adapter / HEADS_META).is_file():
        return (), "adapter heads"
    return _llm_heads(read_heads_adapter_meta(adapter)["heads"], "the heads the adapter trained")


class ExplainingPolicy:
    """The policy as the simulator calls it, explaining the observation of every ``every``-th step on the way."""

    def __init__(self, models: PolicyModels, every: int = 1, progress=None) -> None:
        self.models, self.every, self.progress = models, every, progress
        self.steps: list = []
        self.t = 0

    def reset(self) -> None:
        self.models.policy.reset()
        self.steps.clear()
        self.t = 0

    def __call__(self, image, instruction: str, proprio=None):
        from robosteer.explanation.api import explain
        from robosteer.explanation.viewer import explained_step

        action = self.models.policy(image, instruction, proprio)
        if self.t % self.every == 0:
            vla = self.models.vla
            observation = list(image) if isinstance(image, tuple) else image
            ex = explain(vla, observation, instruction, proprio=proprio if vla.config.proprio_dim else None,
                         base=self.models.base)
            self.steps.append(explained_step(self.t, ex))
        self.t += 1
        if self.progress is not None:
            self.progress.update(1)
        return action


def run_explained(env, task: str, seed: int, models: PolicyModels, *, horizon: int | None = None, every: int = 1,
                  top: int = 10, head: str | None = None, policy_name: str = "policy"):
    """``run_explained(env, "lift/base", 0, models)`` -> ``ExplainedRollout``: one episode, explained as it runs."""
    import numpy as np
    from tqdm.auto import tqdm

    from robosteer.data.schema import ACTION_NAMES
    from robosteer.explanation.viewer import ExplainedRollout
    from robosteer.sim.rollout import run_episode
    from robosteer.sim.tasks import get_family

    task = Task.parse(task)
    horizon = horizon or get_family(task.family).horizon
    frames: list = []
    with tqdm(total=horizon, desc=f"explain {task} seed {seed}", unit="step") as bar:
        policy = ExplainingPolicy(models, every, progress=bar)
        episode = run_episode(env, task, seed, policy, horizon=horizon, record=True, frames=frames)
    views = tuple(env.config.cameras)
    split = np.stack([np.stack(np.split(f, len(views), axis=1)) for f in frames])  # (T + 1, V, H, W, 3)
    quantity = "expected" if models.vla.config.action_head == "tokens" else "action"
    names = ACTION_NAMES if episode.actions.shape[1] == len(ACTION_NAMES) else tuple(
        f"a{i}" for i in range(episode.actions.shape[1]))
    return ExplainedRollout(task=str(task), seed=int(seed), instruction=episode.instruction, success=episode.success,
                            policy=policy_name, heads=tuple(str(h) for h in models.vla.head_layout.heads("llm")),
                            action_names=names, views=views, frames=split, actions=episode.actions,
                            steps=tuple(policy.steps), quantity=quantity, base=models.base_name,
                            highlight=models.highlight, highlight_label=models.highlight_label, head=head, top=top,
                            every=every, horizon=horizon)


def explain_episode(config: ExplainEpisodeConfig, models: PolicyModels | None = None) -> ExplainedEpisode:
    """``explain_episode(ExplainEpisodeConfig(task="lift", out_dir=DIR))``: run, explain, write the viewer and its JSON.

    ``models`` (``load_models(config.policy)``) may be given to reuse loaded models. Without ``config.cameras``
    the episode is rendered in the policy's own views (``sim.cameras.views_for`` of its ``n_views``)."""
    from robosteer.explanation.viewer import build_viewer, episode_json
    from robosteer.files import atomic_write_text, write_json_atomic
    from robosteer.sim.cameras import views_for
    from robosteer.sim.env import SimConfig, make_env

    models = models or load_models(config.policy, config.mask)
    layout, n_views = models.vla.head_layout, int(models.vla.config.n_views)
    if config.head is not None:
        layout.validate(Head.parse(config.head))  # ValueError naming the model's heads
    cameras = views_for(n_views, config.cameras)  # the named views (a ValueError unless n_views of them), else its own
    env = make_env(SimConfig(image_size=config.image_size, cameras=cameras))
    try:
        rollout = run_explained(env, config.task, config.seed, models, horizon=config.steps, every=config.every,
                                top=config.top, head=config.head, policy_name=config.policy)
    finally:
        env.close()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = write_json_atomic(out / "explain.json", episode_json(rollout))
    viewer = atomic_write_text(out / "viewer.html", build_viewer(rollout))
    log.info("%s seed %d: %s after %d steps, %d explained", rollout.task, rollout.seed,
             "success" if rollout.success else "failure", rollout.length, len(rollout.steps))
    return ExplainedEpisode(viewer=viewer, record=record, rollout=rollout)


# every ExplainEpisodeConfig field is a flag (--out is out_dir)
EXPLAIN_ARGUMENTS = ConfigArguments(ExplainEpisodeConfig, flags={"out_dir": "--out"})


def register(subparsers) -> None:
    """Add ``robosteer explain`` to the command line."""
    p = subparsers.add_parser("explain", help="run one episode of a policy and write an HTML viewer of why it acted "
                                              "(per-head direct effects and attention at every step)")
    EXPLAIN_ARGUMENTS.add_to(p)
    p.set_defaults(func=explain_command)


def explain_command(args) -> int:
    """``robosteer explain``: the config from the flags, then :func:`explain_episode`."""
    result = explain_episode(EXPLAIN_ARGUMENTS.build(args))
    rollout = result.rollout
    print(f"{rollout.task} seed {rollout.seed}: {'success' if rollout.success else 'failure'} after "
          f"{rollout.length} steps ({len(rollout.steps)} explained)")
    print(f"viewer: {result.viewer}\ndata: {result.record}")
    return 0

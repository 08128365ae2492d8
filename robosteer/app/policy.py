"""Policies by name: ``load_policy(spec)`` turns a policy name or path into the callable the simulator runs.

A policy is ``policy(image, instruction, proprio) -> action``. ``"expert"`` is the simulator's
scripted expert; anything else is a trained VLA (``"default"``, a checkpoint folder, or a
``policy.json`` naming a base and an adapter), wrapped by :class:`VLAPolicy` around
``vla.predict_action`` (greedy, KV-cached), with a heads or LoRA adapter merged in when given.
The simulator never loads policies itself: it is handed a policy (``evaluate(policy, ...)``)
or, for worker processes, a picklable zero-argument factory (``measure_policy(PolicyFactory(spec), ...)``).

A policy is shown the camera views it takes: ``policy_cameras(spec)`` reads its ``n_views`` from the
checkpoint's ``config.json`` (``policy_views``, no weights loaded) and names the views
(``sim.cameras.cameras_for_views``: the agentview alone, or agentview then wrist); cameras the user names win,
and are checked against the policy. ``VLAPolicy.cameras`` and ``PolicyFactory.cameras`` say the same, so
``evaluate`` / ``measure_policy`` without a ``SimConfig`` render the policy's own views.

Usage::

    policy = load_policy("runs/pretrain/final")          # or "default", "expert", ".../policy.json"
    action = policy(obs.image, obs.instruction, obs.proprio)
    results = measure_policy(PolicyFactory("runs/x/policy.json"), ["lift/base"], workers=2)
    policy_cameras("runs/x/policy.json")                  # -> ("agentview", "wrist") for a two-view base
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The ``format`` of a policy file; a file-format name (from when this module was ``robosteer/policy.py``),
# not a module path, so that policy files read and write as before.
POLICY_FORMAT = "robosteer.policy"


class VLAPolicy:
    """Closed-loop wrapper around an ``OpenVLA``: one action per call.

    A token model (and a chunk of K = 1) is Markovian: each call is one forward pass. A model that
    predicts chunks of K actions in one pass executes them in one of two ways:

    - open loop (the default): the first ``execute`` actions of each chunk (all K by default, as
      OpenVLA-OFT executes them), then the next chunk: about K / ``execute`` times fewer passes;
    - temporal ensembling (``ensemble=m``, ACT's rule): a chunk is predicted at every step and the
      action executed at step t is the average of every chunk's prediction for t, weighted
      ``exp(-m i)`` with i = 0 the oldest prediction (ACT uses m = 0.01): one pass per step.

    ``reset`` forgets the pending actions at the start of an episode. ``forward_passes`` counts the model calls.
    """

    def __init__(self, vla, unnorm_key: str | None = None, execute: int | None = None,
                 ensemble: float | None = None) -> None:
        self.vla = vla.eval()
        self.unnorm_key = unnorm_key
        chunk = int(getattr(vla.config, "action_chunk", 1))
        if execute is not None and not 1 <= execute <= chunk:
            raise ValueError(f"execute={execute}: the policy predicts chunks of {chunk} action(s); execute 1 .. {chunk}")
        if ensemble is not None:
            if execute is not None:
                raise ValueError("give execute= (open loop) or ensemble= (temporal ensembling), not both")
            if not ensemble >= 0:
                raise ValueError(f"ensemble={ensemble}: the weight decay m of exp(-m i) must be >= 0")
        self.execute = chunk if execute is None else int(execute)
        self.ensemble = None if ensemble is None else float(ensemble)
        self.forward_passes = 0
        self._queue: list[np.ndarray] = []
        self._pending: list[list[np.ndarray]] = []  # ensembling: _pending[j] = predictions for step t + j, oldest first

    @property
    def cameras(self) -> tuple[str, ...]:
        """The views this policy takes (``cameras_for_views`` of its ``n_views``): what ``evaluate`` renders for it
        when given no ``SimConfig``."""
        from robosteer.sim.cameras import cameras_for_views

        return cameras_for_views(int(self.vla.config.n_views))

    def reset(self) -> None:
        """Called at the start of an episode: forget the rest of the current chunk."""
        self._queue.clear()
        self._pending.clear()

    def __call__(self, image: np.ndarray, instruction: str, proprio: Any = None) -> np.ndarray:
        import torch

        if self._queue:
            return self._queue.pop(0)
        views, wanted = (len(image) if isinstance(image, (tuple, list)) else 1), int(self.vla.config.n_views)
        if views != wanted:  # the simulator passes a tuple of views when it renders several cameras
            raise ValueError(f"the simulator gives {views} camera view(s) per step; this policy takes {wanted} "
                             f"(its n_views): evaluate with that many cameras (SimConfig.cameras, --cameras)")
        proprio = proprio if self.vla.config.proprio_dim else None
        with torch.no_grad():
            action = np.asarray(self.vla.predict_action(image, instruction, proprio=proprio, unnorm_key=self.unnorm_key),
                                dtype=np.float32)
        self.forward_passes += 1
        if action.ndim == 1:  # a token model: one action
            return action
        if self.ensemble is not None:
            return self._ensembled(action)
        self._queue = list(action[1:self.execute])  # (K, A): run the first `execute` actions open loop
        return action[0]

    def _ensembled(self, chunk: np.ndarray) -> np.ndarray:
        """Add this step's chunk to the pending predictions and return the weighted average for this step."""
        while len(self._pending) < len(chunk):
            self._pending.append([])
        for j, action in enumerate(chunk):
            self._pending[j].append(action)
        now = np.stack(self._pending.pop(0))  # (n, A), oldest first
        weights = np.exp(-self.ensemble * np.arange(len(now)))
        return (weights[:, None] * now).sum(0).astype(np.float32) / np.float32(weights.sum())


def write_policy_file(path: str | Path, base: str | Path, adapter: str | Path | None = None) -> Path:
    """Write ``policy.json`` naming a base checkpoint and an optional adapter (paths relative to the file)."""
    from robosteer.files import write_json_atomic

    path = Path(path)
    rel = (lambda p: None if p is None else os.path.relpath(Path(p).resolve(), path.parent.resolve()))
    spec = {"format": POLICY_FORMAT, "base": str(base) if str(base) == "default" else rel(base),
            "adapter": rel(adapter)}
    return write_json_atomic(path, spec, newline=False)


def read_policy_file(path: str | Path) -> tuple[str | Path, Path | None]:
    """``read_policy_file("runs/x/policy.json")`` -> (base, adapter): ``"default"`` or the base folder, and the
    adapter folder or None, resolved against the file's folder (``write_policy_file`` writes them relative)."""
    from robosteer.files import read_json

    spec = read_json(path, "policy file")
    if not isinstance(spec, dict) or spec.get("format") != POLICY_FORMAT or "base" not in spec:
        raise ValueError(f"{path} is not a robosteer policy file (needs format {POLICY_FORMAT!r} and 'base')")
    root = Path(path).parent
    base = spec["base"] if spec["base"] == "default" else root / spec["base"]
    return base, (root / spec["adapter"]) if spec.get("adapter") else None


def policy_config(spec: str | Path):
    """``policy_config("runs/x/policy.json")`` -> the ``VLAConfig`` of the policy's checkpoint, read from its
    ``config.json`` without loading weights; ``None`` for ``"expert"``.

    ``spec`` is what ``load_policy`` takes: ``"default"``, a checkpoint folder, or a ``policy.json`` (its base's
    config: an adapter changes no input or output)."""
    if str(spec) == "expert":
        return None
    from robosteer.models.loading import _as_config  # the config.json reader load_vla uses

    base = read_policy_file(spec)[0] if str(spec).endswith(".json") else spec
    if str(base) == "default":
        from robosteer.models.assets import default_checkpoint_dir

        base = default_checkpoint_dir()
    return _as_config(Path(base))


def policy_views(spec: str | Path) -> int | None:
    """``policy_views(spec)`` -> the policy's ``n_views`` (images per observation, :func:`policy_config`); ``None``
    for ``"expert"`` (it reads no images)."""
    config = policy_config(spec)
    return None if config is None else int(config.n_views)


def policy_cameras(spec: str | Path, cameras=None) -> tuple[str, ...]:
    """``policy_cameras(spec)`` -> the views to run policy ``spec`` with: ``cameras`` when given (checked against the
    policy's ``n_views``: a ValueError when the counts differ), else the policy's own (``cameras_for_views``);
    the scripted expert takes any cameras and defaults to the agentview alone."""
    from robosteer.sim.cameras import SINGLE_VIEW, check_cameras, views_for

    n_views = policy_views(spec)
    if n_views is None:  # the expert
        return check_cameras(cameras, "cameras") if cameras else SINGLE_VIEW
    return views_for(n_views, cameras)


def load_policy(path: str | Path, adapter: str | Path | None = None, unnorm_key: str | None = None,
                execute: int | None = None, ensemble: float | None = None):
    """``load_policy(checkpoint, adapter=None)``: a checkpoint folder (or ``"default"``), optionally with an
    adapter folder written by ``robosteer finetune`` (heads or LoRA), merged into the weights.
    ``execute`` / ``ensemble``: how a chunk model runs its chunks (:class:`VLAPolicy`).

    ``path`` may also be a ``policy.json`` (``write_policy_file``) naming the base and the adapter, or
    ``"expert"``: the simulator's scripted expert (a ``ScriptedExpert``; every other spec gives a ``VLAPolicy``).
    """
    if str(path) == "expert":
        if adapter is not None or execute is not None or ensemble is not None:
            raise ValueError("the scripted expert takes no adapter and no chunk execution")
        from robosteer.sim.expert import ScriptedExpert

        return ScriptedExpert()
    import torch

    from robosteer.models import load_vla

    if str(path).endswith(".json"):
        path, named = read_policy_file(path)
        adapter = named or adapter

    vla = load_vla(path, dtype=torch.float32)
    if adapter is not None:
        from robosteer.train.adapters import load_adapter

        load_adapter(vla, adapter, merge=True)
    return VLAPolicy(vla, unnorm_key, execute=execute, ensemble=ensemble)


@dataclass(frozen=True)
class PolicyFactory:
    """``PolicyFactory("runs/x/policy.json")()``: loads that policy; picklable, for the simulator's worker processes.

    ``measure_policy`` calls it once in each worker (and once in-process with one worker). A model policy
    then computes on one torch thread, as one worker runs per core; ``"expert"`` needs no torch.
    """

    spec: str  # a load_policy spec: "expert", "default", a checkpoint folder or a policy.json
    execute: int | None = None  # a chunk model: actions of each chunk run open loop (VLAPolicy)
    ensemble: float | None = None  # a chunk model: temporal ensembling with weights exp(-m i) (VLAPolicy)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec:
            raise ValueError(f"PolicyFactory.spec must be a non-empty policy name or path (str), got {self.spec!r}")
        if self.execute is not None and self.ensemble is not None:
            raise ValueError("PolicyFactory: give execute (open loop) or ensemble (temporal ensembling), not both")

    @property
    def name(self) -> str:
        """What progress bars call the policy: its spec."""
        return self.spec

    @property
    def cameras(self) -> tuple[str, ...]:
        """The policy's own views (``policy_cameras``): what ``measure_policy`` renders when given no ``SimConfig``."""
        return policy_cameras(self.spec)

    def __call__(self):
        if self.spec != "expert":  # the expert needs no torch
            import torch

            torch.set_num_threads(1)  # one worker per core
        return load_policy(self.spec, execute=self.execute, ensemble=self.ensemble)

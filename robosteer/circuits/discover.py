"""Head discovery end to end: demonstrations in, scores + head mask + head-map out.

This is what ``robosteer discover`` and the main example run. Methods:

- ``knn`` (default, the released Robotic Steering method): record every head's output at
  the demonstrations' keyframes, score it by leave-one-episode-out kNN regression of the action, and
  select as the released code does (``released_selection.select_heads_knn``, mode "topk": rank per k,
  score each k's top-k set jointly, keep the best k); also writes the released ``heads.json``;
- ``knn-robosteer``: the same scores, the top k heads each at its own best k (robosteer's earlier
  selection, ``HeadMask.select``);
- ``activation`` / ``attribution``: causal scores over the probes passed in (pairs of frames
  that differ in one factor: visual, linguistic, physical, ...), combined across probes by mean
  z-score. Circuits do not build probes: the caller does (the application builds sim probes of
  ``config.probes`` for the demonstrations' task, ``robosteer.app.sim_probes.discovery_probes``);
- ``sav``: nearest-class-mean accuracy of discretised actions; ``random``: the control;
- ``cma`` (the release's causal-mediation selector): the rise in the policy's action MSE on the
  demonstrations' keyframes when one LLM head's output at the first action token is replaced by
  its mean over those frames, one batched forward per head chunk and frame batch
  (``mediation.cma_head_scores``); the top k by that rise.

Usage::

    result = discover(vla, DemoDataset("demos/lift-novel"), DiscoverConfig(method="knn", top_k=8), out="runs/heads")
    result.mask.heads, result.scores.to_frame()
    result = discover(vla, demos, DiscoverConfig(method="attribution"), probes=[Probe("visual", pairs), ...])
    result = discover(vla, demos, DiscoverConfig(method="cma", top_k=8))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.frames import Frame
from ..masks import HeadMask
from .config import PROBE_METHODS, RECORD_METHODS, DiscoverConfig
from .scores import HeadScores

log = logging.getLogger(__name__)


@dataclass
class DiscoveryResult:
    scores: HeadScores
    mask: HeadMask
    column: str
    files: dict[str, Path] = field(default_factory=dict)
    selection: Any = None  # method knn: the released selection (released_selection.KNNSelection)


def score_heads(vla, dataset, config: DiscoverConfig, out: str | Path | None = None, *,
                probes: Sequence[Any] | None = None) -> tuple[HeadScores, str]:
    """Scores of every head of ``config.towers`` and the column to select by (``out``: where to stream activations).

    ``probes``: the ``Probe`` objects ``activation`` / ``attribution`` score on (required for them, unused otherwise).
    """
    scores, column, _ = _score_heads(vla, dataset, config, out, probes=probes)
    return scores, column


def _score_heads(vla, dataset, config: DiscoverConfig, out, *, probes) -> tuple[HeadScores, str, Any]:
    """``score_heads``, plus the recorded ``HeadActivations`` (None for the methods that record none)."""
    if probes and config.method not in PROBE_METHODS:
        raise ValueError(f"probes are scored by the methods {', '.join(PROBE_METHODS)} only; "
                         f"method is {config.method!r}")
    if config.method == "random":
        from .random_baseline import random_scores

        scores = random_scores(vla.head_layout, seed=config.seed, towers=config.towers, fingerprint=vla.fingerprint())
        from ..interventions import active_heads

        active = {h for t in config.towers for h in active_heads(vla, t)}
        keep = [i for i, h in enumerate(scores.heads) if h in active]
        scores = HeadScores(tuple(scores.heads[i] for i in keep), {c: v[keep] for c, v in scores.columns.items()},
                            dict(scores.higher_is_better), layout=scores.layout, method="random",
                            fingerprint=scores.fingerprint, data=scores.data, meta=dict(scores.meta))
        return scores, scores.default_column, None
    if config.method == "cma":
        from .mediation import cma_head_scores
        from .record import select_frames

        frames = select_frames([Frame.coerce(dataset[i], f"frame {i}") for i in range(len(dataset))],
                               config.keyframes_only)
        return cma_head_scores(vla, frames, unnorm_key=config.unnorm_key), "cma", None
    if config.method in RECORD_METHODS:
        from .record import RecordConfig, record_heads

        if config.stream and out is None:
            raise ValueError("stream=True needs an output folder (discover(..., out=DIR))")
        acts = record_heads(vla, [dataset[i] for i in range(len(dataset))], RecordConfig(
            towers=config.towers, position=config.position, keyframes_only=config.keyframes_only,
            unnorm_key=config.unnorm_key), out=Path(out) / "activations" if config.stream else None)
        if config.method in ("knn", "knn-robosteer"):
            return acts.knn_scores(), "knn", acts
        if config.method == "variance":  # the release's variance selector: total variance of each head's output
            from .variance import variance_scores

            scores = variance_scores(dict(acts.acts), layout=vla.head_layout, fingerprint=vla.fingerprint())
            return scores, scores.default_column, acts
        from .sav import discretize_actions, sav_scores

        labels = np.asarray(discretize_actions(acts.actions))
        values, counts = np.unique(labels, return_counts=True)
        keep = np.isin(labels, values[counts >= 2])  # leave-one-out needs two examples of a class
        if not keep.all():
            log.info("SAV: dropping %d frames whose discretised action occurs once", int((~keep).sum()))
        if len(np.unique(labels[keep])) < 2:
            raise ValueError("SAV needs at least two action classes with two frames each; record more frames "
                             "(--all-frames) or use another method")
        parts = [sav_scores(acts.flat(t)[keep], labels[keep], acts.heads(t), layout=vla.head_layout,
                            fingerprint=vla.fingerprint()) for t in acts.acts]
        scores = parts[0] if len(parts) == 1 else HeadScores.merge(*parts)
        return scores, scores.default_column, acts
    from .patching import PatchingConfig, activation_patching, attribution_patching

    if not probes:
        raise ValueError(f"method {config.method!r} scores heads on probes: pass probes=[Probe, ...] (for sim probes "
                         "of config.probes: robosteer.app.sim_probes.discovery_probes(dataset, config))")
    parts = []
    for probe in probes:
        if config.method == "activation":
            parts.append(activation_patching(vla, probe, PatchingConfig(towers=config.towers, unnorm_key=config.unnorm_key)))
        else:
            parts.append(attribution_patching(vla, probe, towers=config.towers, unnorm_key=config.unnorm_key))
    scores = parts[0] if len(parts) == 1 else HeadScores.merge(*parts)
    if len(parts) > 1:
        scores = scores.combine(name=f"{config.method}:combined")
        return scores, f"{config.method}:combined", None
    return scores, scores.default_column, None


def _select(scores: HeadScores, column: str, config: DiscoverConfig, layout, acts) -> tuple[HeadMask, Any]:
    """The mask of ``config.top_k`` heads (all scored heads, with a warning, when fewer are scored)."""
    k = config.top_k
    available = len(scores.top(None, column))
    if k > available:
        log.warning("--top-k %d asks for more heads than the %d scored on towers %s; selecting all %d", k, available,
                    ", ".join(config.towers), available)
        k = available
    if config.method != "knn":
        return HeadMask.select(scores, k=k, column=column, layout=layout), None
    from .released_selection import select_heads_knn

    selection = select_heads_knn(dict(acts.acts), acts.actions, acts.episodes, acts.frames, n=k)
    return selection.to_mask(layout, fingerprint=scores.fingerprint, data=scores.data), selection


def with_provenance(scores: HeadScores, vla, dataset) -> HeadScores:
    """``scores`` with ``meta["task"]`` (the demonstrations' tasks) and ``meta["policy"]`` (what the model was
    loaded from) where the scorer did not record them: the head-map's subtitle names both."""
    from dataclasses import replace

    meta = dict(scores.meta)
    recorded = getattr(dataset, "meta", None)  # a collected folder's meta.json: collect_config.tasks
    collected = recorded.get("collect_config") if isinstance(recorded, dict) else None
    tasks = collected.get("tasks") if isinstance(collected, dict) else None
    if tasks and "task" not in meta:
        meta["task"] = ", ".join(map(str, tasks))
    if getattr(vla, "source", None) and "policy" not in meta:
        meta["policy"] = vla.source
    return replace(scores, meta=meta) if meta != dict(scores.meta) else scores


def discover(vla, dataset, config: DiscoverConfig = DiscoverConfig(), out: str | Path | None = None, *,
             probes: Sequence[Any] | None = None) -> DiscoveryResult:
    """Score heads on ``dataset`` and select ``config.top_k``; with ``out``, write the files a person opens.

    ``probes``: the ``Probe`` objects the ``activation`` / ``attribution`` methods score on (see ``score_heads``).
    """
    scores, column, acts = _score_heads(vla, dataset, config, out, probes=probes)
    scores = with_provenance(scores, vla, dataset)
    mask, selection = _select(scores, column, config, vla.head_layout, acts)
    result = DiscoveryResult(scores=scores, mask=mask, column=column, selection=selection)
    if out is not None:
        from ..viz import head_map, save_html

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if config.stream and config.method in RECORD_METHODS:
            result.files["activations"] = out / "activations"
        result.files["scores"] = Path(scores.save(out / "scores.csv"))
        result.files["mask"] = Path(mask.to_json(out / "mask.json"))
        result.files["mask_safetensors"] = Path(mask.save_safetensors(out / "mask.safetensors"))
        if selection is not None and len({h.tower for h in selection.heads}) == 1:
            from .heads_json import write_heads_json

            result.files["heads_json"] = Path(write_heads_json(out / "heads.json", selection))
        fig = head_map(scores, column=column, mask=mask)  # its title says what the score means, its subtitle the source
        result.files["headmap"] = Path(save_html(fig, out / "headmap.html"))
        log.info("wrote %s", ", ".join(str(p) for p in result.files.values()))
    return result

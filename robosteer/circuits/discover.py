"""Head discovery end to end: demonstrations in, scores + head mask + head-map out.

This is what ``robosteer discover`` and the main example run. Methods:

- ``knn`` (default, the released Robotic Steering scorer): record every head's output at
  the demonstrations' keyframes, score it by leave-one-episode-out kNN regression of the action;
- ``activation`` / ``attribution``: causal scores over the probes passed in (pairs of frames
  that differ in one factor: visual, linguistic, physical, ...), combined across probes by mean
  z-score. Circuits do not build probes: the caller does (the application builds sim probes of
  ``config.probes`` for the demonstrations' task, ``robosteer.app.sim_probes.discovery_probes``);
- ``sav``: nearest-class-mean accuracy of discretised actions; ``random``: the control.

Usage::

    result = discover(vla, DemoDataset("demos/lift-novel"), DiscoverConfig(method="knn", top_k=8), out="runs/heads")
    result.mask.heads, result.scores.to_frame()
    result = discover(vla, demos, DiscoverConfig(method="attribution"), probes=[Probe("visual", pairs), ...])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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


def score_heads(vla, dataset, config: DiscoverConfig, out: str | Path | None = None, *,
                probes: Sequence[Any] | None = None) -> tuple[HeadScores, str]:
    """Scores of every head of ``config.towers`` and the column to select by (``out``: where to stream activations).

    ``probes``: the ``Probe`` objects ``activation`` / ``attribution`` score on (required for them, unused otherwise).
    """
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
        return scores, scores.default_column
    if config.method in RECORD_METHODS:
        from .record import RecordConfig, record_heads

        if config.stream and out is None:
            raise ValueError("stream=True needs an output folder (discover(..., out=DIR))")
        acts = record_heads(vla, [dataset[i] for i in range(len(dataset))], RecordConfig(
            towers=config.towers, position=config.position, keyframes_only=config.keyframes_only,
            unnorm_key=config.unnorm_key), out=Path(out) / "activations" if config.stream else None)
        if config.method == "knn":
            scores = acts.knn_scores()
            return scores, "knn"
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
        return scores, scores.default_column
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
        return scores, f"{config.method}:combined"
    return scores, scores.default_column


def discover(vla, dataset, config: DiscoverConfig = DiscoverConfig(), out: str | Path | None = None, *,
             probes: Sequence[Any] | None = None) -> DiscoveryResult:
    """Score heads on ``dataset`` and select ``config.top_k``; with ``out``, write the files a person opens.

    ``probes``: the ``Probe`` objects the ``activation`` / ``attribution`` methods score on (see ``score_heads``).
    """
    scores, column = score_heads(vla, dataset, config, out, probes=probes)
    mask = HeadMask.select(scores, k=config.top_k, column=column, layout=vla.head_layout)
    result = DiscoveryResult(scores=scores, mask=mask, column=column)
    if out is not None:
        from ..viz import head_map, save_html

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if config.stream and config.method in RECORD_METHODS:
            result.files["activations"] = out / "activations"
        result.files["scores"] = Path(scores.save(out / "scores.csv"))
        result.files["mask"] = Path(mask.to_json(out / "mask.json"))
        result.files["mask_safetensors"] = Path(mask.save_safetensors(out / "mask.safetensors"))
        title = f"{config.method} head scores ({column}); top {config.top_k} outlined"
        fig = head_map(scores, column=column, mask=mask, title=title)
        result.files["headmap"] = Path(save_html(fig, out / "headmap.html"))
        log.info("wrote %s", ", ".join(str(p) for p in result.files.values()))
    return result

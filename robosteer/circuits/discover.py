"""Head discovery end to end: demonstrations in, scores + head mask + head-map out.

This is what ``robosteer discover`` and the main example run. Methods:

- ``knn`` (default, the released Robotic Steering scorer): record every head's output at
  the demonstrations' keyframes, score it by leave-one-episode-out kNN regression of the action;
- ``activation`` / ``attribution``: causal scores over sim probes (visual, linguistic,
  physical, ...) built for the demonstrations' task, combined across probes by mean z-score;
- ``sav``: nearest-class-mean accuracy of discretised actions; ``random``: the control.

Usage::

    result = discover(vla, DemoDataset("demos/lift-novel"), DiscoverConfig(method="knn", top_k=8), out="runs/heads")
    result.mask.heads, result.scores.to_frame()
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..masks import HeadMask
from .scores import HeadScores

log = logging.getLogger(__name__)

METHODS = ("knn", "activation", "attribution", "sav", "random")


@dataclass(frozen=True)
class DiscoverConfig:
    method: str = "knn"
    top_k: int = 8  # heads to select (globally across the recorded towers)
    towers: tuple[str, ...] = ("llm",)
    position: str = "first_action"  # LLM token position for knn / sav (see circuits.record)
    keyframes_only: bool = True
    probes: tuple[str, ...] = ("visual", "linguistic", "physical")  # for activation / attribution
    probe_pairs: int = 12
    probe_task: str | None = None  # sim task for probes; default: the demonstrations' most common task
    seed: int = 0  # random draws: the random scorer's scores and the sim probes' scenes
    unnorm_key: str | None = None
    stream: bool = False  # knn / sav: write activations to <out>/activations batch by batch (bounded memory)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.method in ("activation", "attribution") and not self.probes:
            raise ValueError(f"method {self.method!r} needs at least one probe")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass
class DiscoveryResult:
    scores: HeadScores
    mask: HeadMask
    column: str
    files: dict[str, Path] = field(default_factory=dict)


def frame_dicts(dataset, indices=None) -> list[dict[str, Any]]:
    """Frames of a robosteer ``FrameDataset`` as the mappings the recorders take."""
    indices = range(len(dataset)) if indices is None else indices
    return [dataset[int(i)].as_record() for i in indices]


def score_heads(vla, dataset, config: DiscoverConfig, out: str | Path | None = None) -> tuple[HeadScores, str]:
    """Scores of every head of ``config.towers`` and the column to select by (``out``: where to stream activations)."""
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
    if config.method in ("knn", "sav"):
        from .record import RecordConfig, record_heads

        if config.stream and out is None:
            raise ValueError("stream=True needs an output folder (discover(..., out=DIR))")
        acts = record_heads(vla, frame_dicts(dataset), RecordConfig(
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
    from ..app.sim_probes import probe_seed, sim_probe

    task = config.probe_task or Counter(dataset.tasks).most_common(1)[0][0]
    parts = []
    for kind in config.probes:
        probe = sim_probe(kind, task=task, n=config.probe_pairs, seed=probe_seed(config.seed),
                          image_size=dataset.image(0).shape[0])
        if config.method == "activation":
            parts.append(activation_patching(vla, probe, PatchingConfig(towers=config.towers, unnorm_key=config.unnorm_key)))
        else:
            parts.append(attribution_patching(vla, probe, towers=config.towers, unnorm_key=config.unnorm_key))
    scores = parts[0] if len(parts) == 1 else HeadScores.merge(*parts)
    if len(parts) > 1:
        scores = scores.combine(name=f"{config.method}:combined")
        return scores, f"{config.method}:combined"
    return scores, scores.default_column


def discover(vla, dataset, config: DiscoverConfig = DiscoverConfig(), out: str | Path | None = None) -> DiscoveryResult:
    """Score heads on ``dataset`` and select ``config.top_k``; with ``out``, write the files a person opens."""
    scores, column = score_heads(vla, dataset, config, out)
    mask = HeadMask.select(scores, k=config.top_k, column=column, layout=vla.head_layout)
    result = DiscoveryResult(scores=scores, mask=mask, column=column)
    if out is not None:
        from ..viz import head_map, save_html

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if config.stream and config.method in ("knn", "sav"):
            result.files["activations"] = out / "activations"
        result.files["scores"] = Path(scores.save(out / "scores.csv"))
        result.files["mask"] = Path(mask.to_json(out / "mask.json"))
        result.files["mask_safetensors"] = Path(mask.save_safetensors(out / "mask.safetensors"))
        title = f"{config.method} head scores ({column}); top {config.top_k} outlined"
        fig = head_map(scores, column=column, mask=mask, title=title)
        result.files["headmap"] = Path(save_html(fig, out / "headmap.html"))
        log.info("wrote %s", ", ".join(str(p) for p in result.files.values()))
    return result

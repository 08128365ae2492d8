"""Activation patching (causal mediation) and attribution patching of every head, over probes.

One engine serves both. For each probe pair, a clean run and a corrupted run give the
metric ``m`` (``probes.probe_metric``: log-probability of the clean action tokens, or minus the
L1 error of a continuous chunk) and every head's ``hook_z``:

- ``activation_patching``: run the corrupted input with one head's clean output patched
  in (at the LLM's end positions, or all positions of a vision tower); the score is the
  fraction of the clean-corrupted gap it recovers, ``sum(m_patched - m_corr) / sum(m_clean - m_corr)``
  over pairs. Heads are batched: the corrupted input is repeated and each copy patches
  another head. ``mode="mean_ablation"`` instead replaces a head by its mean over the
  probe's frames in the clean run and scores the drop ``sum(m_clean - m_ablated)``.
- ``attribution_patching``: the first-order estimate of the same recovery for all heads
  from one clean forward and one corrupted forward+backward:
  ``sum_pos <z_clean - z_corr, dm/dz at z_corr>``, normalised by the same gap.

Usage::

    scores = activation_patching(vla, probe, PatchingConfig(towers=("llm",)))
    approx = attribution_patching(vla, probe)
    scores.spearman(approx)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..interventions import active_heads, group_by_site, head_slice_hooks
from ..sites import Head, HookSite
from .probes import Probe, build_inputs, probe_metric
from .scores import HeadScores

MODES = ("denoise", "mean_ablation")


@dataclass(frozen=True)
class PatchingConfig:
    towers: tuple[str, ...] = ("llm",)
    mode: str = "denoise"  # "denoise": clean head into corrupted run; "mean_ablation": mean head into clean run
    heads_per_batch: int = 32  # copies of the input run at once (one patched head each)
    unnorm_key: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.heads_per_batch < 1:
            raise ValueError("heads_per_batch must be >= 1")
        if not self.towers:
            raise ValueError("patch at least one tower")


def _heads(vla, towers: Sequence[str]) -> list[Head]:
    known = vla.head_layout.names
    bad = [t for t in towers if t not in known]
    if bad:
        raise ValueError(f"unknown tower(s) {bad}; this model has {list(known)}")
    return [h for t in towers for h in active_heads(vla, t)]


def _z_names(heads: Sequence[Head]) -> list[str]:
    return list(dict.fromkeys(h.hook_z for h in heads))


def _site_rows(site: HookSite, end: torch.Tensor | None, row: int, views: int) -> tuple:
    """Where a head acts in example ``row``: the LLM's end positions (a token model), or every position of the
    example's rows ``row * views .. row * views + views - 1`` (a vision tower sees ``views`` cameras per example,
    observation-major; pi0's towers all act everywhere, ``end`` None)."""
    if site.tower == "llm" and end is not None:
        return row, end[row]
    return slice(row * views, (row + 1) * views), slice(None)


def _aligned(cache, names: Sequence[str], end: torch.Tensor | None, row: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """Per site, example ``row``'s ``hook_z`` where heads act (of a batch of ``batch`` examples): ``(1 + A, H, D)``
    (LLM end slots) or ``(views * S, H, D)`` (every position of every camera view, in view order)."""
    out = {}
    for n in names:
        rows, positions = _site_rows(HookSite.parse(n), end, row, cache[n].shape[0] // batch)
        z = cache[n][rows, positions]
        out[n] = z if isinstance(rows, int) else z.flatten(0, 1)
    return out


def _metric(vla, built, fwd_hooks=()) -> torch.Tensor:
    out = vla.run_with_hooks(**built["inputs"], fwd_hooks=fwd_hooks)
    return probe_metric(vla, out, built["end"], built["targets"])


def _repeat(built: dict, n: int) -> dict:
    """A batch of one as ``n`` copies (views); a prepared-inputs object (pi0's) repeats itself with ``expand``."""
    def rows(v):
        if torch.is_tensor(v):
            return v.expand(n, *v.shape[1:])
        return v.expand(n) if hasattr(v, "expand") else v
    end, targets = built["end"], built["targets"]
    return {"inputs": {k: rows(v) for k, v in built["inputs"].items()},
            "end": None if end is None else end.expand(n, -1), "targets": targets.expand(n, *targets.shape[1:])}


def _patch_hooks(chunk: Sequence[Head], sources: dict[str, torch.Tensor], dst_end: torch.Tensor | None):
    """Copy c of the batch gets head ``chunk[c]`` from the aligned ``sources`` (every view, for a vision head)."""
    by_site = group_by_site((head, (c, head.head)) for c, head in enumerate(chunk))

    def edit(out, act, site, name, items):
        views = act.shape[0] // len(chunk)
        for c, h in items:
            rows, positions = _site_rows(site, dst_end, c, views)
            source = sources[name][:, h].to(act.dtype)
            if isinstance(rows, int):
                out[rows, positions, h] = source
            else:
                out[rows, positions, h] = source.reshape(views, -1, source.shape[-1])
    return head_slice_hooks(by_site, edit)


@torch.no_grad()
def activation_patching(vla, probe: Probe, config: PatchingConfig = PatchingConfig(), progress: bool = False) -> HeadScores:
    """``activation_patching(vla, probe)`` -> ``HeadScores`` column ``activation:{probe}`` (recovered fraction)."""
    from tqdm.auto import tqdm

    heads = _heads(vla, config.towers)
    names = _z_names(heads)
    effect = np.zeros(len(heads))
    gap = 0.0
    means = _mean_z(vla, probe, names, config) if config.mode == "mean_ablation" else None
    for clean_frame, corrupt_frame in tqdm(probe.pairs, disable=not progress, desc=f"patching {probe.name}"):
        clean = build_inputs(vla, [clean_frame], config.unnorm_key)
        _, cache = vla.run_with_cache(**clean["inputs"], names_filter=names)
        m_clean = _metric(vla, clean)[0].item()
        if config.mode == "denoise":
            target = build_inputs(vla, [corrupt_frame], config.unnorm_key)
            base = _metric(vla, target)[0].item()
            sources = _aligned(cache, names, clean["end"], 0)
            gap += m_clean - base
        else:
            target, base, sources = clean, m_clean, means
        for start in range(0, len(heads), config.heads_per_batch):
            chunk = heads[start : start + config.heads_per_batch]
            batch = _repeat(target, len(chunk))
            patched = _metric(vla, batch, _patch_hooks(chunk, sources, batch["end"])).numpy()
            effect[start : start + len(chunk)] += (patched - base) if config.mode == "denoise" else (base - patched)
    if config.mode == "denoise":
        values = effect / gap if abs(gap) > 1e-12 else np.full(len(heads), np.nan)
        meta = {"mode": config.mode, "clean_minus_corrupted": gap / len(probe), "pairs": len(probe)}
    else:
        values = effect / len(probe)
        meta = {"mode": config.mode, "pairs": len(probe)}
    column = f"activation:{probe.name}" if config.mode == "denoise" else f"mean_ablation:{probe.name}"
    return HeadScores(tuple(heads), {column: values}, {column: True}, layout=vla.head_layout,
                      method="activation" if config.mode == "denoise" else "mean_ablation", probe=probe.name,
                      fingerprint=vla.fingerprint(), data=f"{len(probe)} probe pairs ({probe.kind})", meta=meta)


def _mean_z(vla, probe: Probe, names: list[str], config: PatchingConfig) -> dict[str, torch.Tensor]:
    """Mean aligned ``hook_z`` over every frame of the probe (clean and corrupted)."""
    frames = [frame for pair in probe.pairs for frame in pair]
    built = build_inputs(vla, frames, config.unnorm_key)
    _, cache = vla.run_with_cache(**built["inputs"], names_filter=names)
    rows = [_aligned(cache, names, built["end"], b, len(frames)) for b in range(len(frames))]
    return {n: torch.stack([r[n] for r in rows]).float().mean(0) for n in names}


def attribution_patching(vla, probe: Probe, towers: Sequence[str] = ("llm",), unnorm_key: str | None = None) -> HeadScores:
    """``attribution_patching(vla, probe)`` -> ``HeadScores`` column ``attribution:{probe}``.

    All heads from one clean forward and one corrupted forward+backward per pair (batched over pairs).
    """
    heads = _heads(vla, towers)
    names = _z_names(heads)
    clean = build_inputs(vla, [c for c, _ in probe.pairs], unnorm_key)
    corrupt = build_inputs(vla, [x for _, x in probe.pairs], unnorm_key)
    with torch.no_grad():
        _, clean_cache = vla.run_with_cache(**clean["inputs"], names_filter=names)
        m_clean = _metric(vla, clean)
    m_corrupt, corrupt_cache, grads = vla.run_with_cache_and_grads(
        lambda out: probe_metric(vla, out, corrupt["end"], corrupt["targets"]), **corrupt["inputs"], names_filter=names)
    gap = float((m_clean - m_corrupt).sum())
    values = np.zeros(len(heads))
    index = {h: i for i, h in enumerate(heads)}
    for b in range(len(probe)):
        src = _aligned(clean_cache, names, clean["end"], b, len(probe))
        dst = _aligned(corrupt_cache, names, corrupt["end"], b, len(probe))
        grad = _aligned(grads, names, corrupt["end"], b, len(probe))
        for name in names:
            site = HookSite.parse(name)
            per_head = ((src[name] - dst[name]) * grad[name]).sum(dim=(0, 2))  # (H,)
            for h, v in enumerate(per_head.tolist()):
                head = Head(site.tower, site.layer, h)
                if head in index:
                    values[index[head]] += v
    values = values / gap if abs(gap) > 1e-12 else np.full(len(heads), np.nan)
    column = f"attribution:{probe.name}"
    return HeadScores(tuple(heads), {column: values}, {column: True}, layout=vla.head_layout, method="attribution",
                      probe=probe.name, fingerprint=vla.fingerprint(), data=f"{len(probe)} probe pairs ({probe.kind})",
                      meta={"clean_minus_corrupted": gap / len(probe), "pairs": len(probe)})

"""Causal-mediation head scores: the release's ``cma`` selector, from predictions with one head replaced.

The release (openpi_robotv ``CMA_selection.py``) scores head h by the rise in action MSE
when h's output at one token position (the first action token) is replaced by its mean
over a *baseline* data set, everything else left as it is:

    cma_h = mean_n,a (ablated_h[n, a] - y[n, a])^2  -  mean_n,a (baseline[n, a] - y[n, a])^2

where ``baseline`` are the policy's own predictions without intervention (the release
reads them from the recording, ``predicted_action_label``) and ``ablated_h`` those with
head h replaced (the first action of the predicted chunk). Higher is more important; the
release sorts (cma, layer, head) descending, so on a tie the later head comes first,
whereas ``HeadScores.top`` puts the earlier first.

These are the plain-array definitions: ``baseline_means`` gives the replacement values
from recorded activations, ``cma_scores`` the scores from predictions. Producing the
ablated predictions needs one policy forward per head and frame, e.g. with
``robosteer.interventions.ablate_heads(heads, how="mean", means=..., positions=...)``
around ``vla.predict_action``; that loop is not part of this module.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from robosteer.circuits.scores import HeadScores
from robosteer.sites import Head, HeadLayout


def baseline_means(acts) -> np.ndarray | dict[str, np.ndarray]:
    """``baseline_means(acts)``: each head's mean output over the baseline frames, (N, L, H, D) -> (L, H, D).

    A ``{tower: (N, L, H, D)}`` dict gives ``{tower: (L, H, D)}``.
    """
    if isinstance(acts, Mapping):
        return {tower: baseline_means(x) for tower, x in acts.items()}
    x = acts.detach().cpu().double().numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts, np.float64)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"acts must be (N, layers, heads, d) with N >= 1, got shape {x.shape}")
    return x.mean(axis=0)


def cma_scores(actions, baseline_predictions, ablated_predictions, heads: Sequence[Head | str] | None = None, *,
               layout: HeadLayout | None = None, fingerprint: str | None = None, data: str = "") -> HeadScores:
    """``cma_scores(actions, baseline, {head: ablated})`` -> ``HeadScores`` with ``cma`` and ``cma/mse``.

    ``actions`` and ``baseline_predictions`` (N, A); ``ablated_predictions`` (H, N, A) with
    ``heads`` naming H, or a mapping ``{head: (N, A)}``. ``cma`` is the rise in MSE (higher is
    more important), ``cma/mse`` the MSE with the head replaced.
    """
    y = _matrix(actions, "actions")
    base = _matrix(baseline_predictions, "baseline_predictions")
    if base.shape != y.shape:
        raise ValueError(f"baseline_predictions must have the shape of actions {y.shape}, got {base.shape}")
    if isinstance(ablated_predictions, Mapping):
        if heads is not None:
            raise ValueError("pass heads only with an (H, N, A) array; a {head: predictions} mapping names its heads")
        heads = list(ablated_predictions)
        ablated = [_matrix(ablated_predictions[h], f"ablated_predictions[{h}]") for h in heads]
    else:
        stack = np.asarray(ablated_predictions, dtype=np.float64)
        if stack.ndim != 3:
            raise ValueError(f"ablated_predictions must be (heads, N, A) or a mapping, got shape {stack.shape}")
        if heads is None or len(heads) != stack.shape[0]:
            raise ValueError(f"ablated_predictions has {stack.shape[0]} heads: pass heads=[...] naming them")
        ablated = list(stack)
    for h, pred in zip(heads, ablated):
        if pred.shape != y.shape:
            raise ValueError(f"ablated predictions of {h} have shape {pred.shape}; actions have {y.shape}")
    baseline_mse = float(np.mean((base - y) ** 2))
    mse = np.array([np.mean((pred - y) ** 2) for pred in ablated])
    return HeadScores(tuple(Head.parse(h) for h in heads), {"cma": mse - baseline_mse, "cma/mse": mse},
                      {"cma": True, "cma/mse": True}, layout=layout, method="cma", fingerprint=fingerprint,
                      data=data or f"{y.shape[0]} frames", meta={"baseline_mse": baseline_mse})


def _matrix(x, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, A), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN/inf")
    return a

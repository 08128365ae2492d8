"""Sparse Attention Vectors (SAV): the few-shot classification baseline for head scores.

The predecessor of Robotic Steering (per-head class means of last-token activations over
few-shot examples, each head scored by nearest-class-mean accuracy, the top 20 heads vote;
docs/circuits.md, "Sparse Attention Vectors"): each head is scored by how well its
activation classifies the examples by nearest class mean. For head h, class c with n_c examples and class sum s_c:

- leave-one-out class means: for example i of class c_i, its own class mean is
  (s_{c_i} − x_i) / (n_{c_i} − 1); the other classes use their full means s_c / n_c;
- prediction: the class whose mean has the highest cosine similarity with x_i;
- score ``sav`` (or ``sav:<probe>``): the leave-one-out accuracy (higher is better).

Labels are any discrete classes: task ids, or a discretised action
(``discretize_actions``). All heads are scored at once.
"""

from __future__ import annotations

import numpy as np
import torch

from robosteer.circuits.activations import head_blocks, unit_rows
from robosteer.circuits.scores import HeadScores
from robosteer.sites import Head, HeadLayout


def discretize_actions(actions, n_bins: int = 3) -> np.ndarray:
    """``discretize_actions(actions, 3)`` -> (N,) int class ids: each dimension cut at its quantiles, rows deduplicated."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"actions must be (N, A), got shape {a.shape}")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    edges = np.quantile(a, np.linspace(0, 1, n_bins + 1)[1:-1], axis=0)  # (n_bins - 1, A)
    binned = np.stack([np.searchsorted(edges[:, j], a[:, j], side="left") for j in range(a.shape[1])], axis=1)
    return np.unique(binned, axis=0, return_inverse=True)[1].reshape(-1)


def _loo_accuracy(x: torch.Tensor, label: torch.Tensor, n_classes: int) -> torch.Tensor:
    """x (H, N, D) float64, label (N,) int64 -> (H,) leave-one-out nearest-class-mean accuracy."""
    onehot = torch.nn.functional.one_hot(label, n_classes).to(x.dtype)  # (N, C)
    counts = onehot.sum(dim=0)  # (C,)
    sums = onehot.T @ x  # (H, C, D)
    means = unit_rows(sums / counts[:, None])  # (H, C, D)
    xn = unit_rows(x)  # (H, N, D)
    sim = xn @ means.transpose(1, 2)  # (H, N, C)
    own = (sums[:, label, :] - x) / (counts[label] - 1)[:, None]  # (H, N, D) own-class mean without i
    sim[:, torch.arange(len(label)), label] = (xn * unit_rows(own)).sum(dim=-1)
    return (sim.argmax(dim=-1) == label).to(torch.float64).mean(dim=1)


def sav_scores(acts, labels, heads=None, *, probe: str | None = None, layout: HeadLayout | None = None,
               fingerprint: str | None = None, data: str | None = None) -> HeadScores:
    """``sav_scores(acts, task_ids, heads)`` -> ``HeadScores`` with column ``sav`` (leave-one-out accuracy).

    ``acts`` as for ``knn_scores``; ``labels`` (N,) discrete classes, at least two
    classes with at least two examples each.
    """
    blocks = head_blocks(acts, heads, layout, dtype=torch.float64)
    n = blocks[0].acts.shape[0]
    raw = np.asarray(labels)
    if raw.shape != (n,):
        raise ValueError(f"labels must be (N,) with N = {n} like acts, got shape {raw.shape}")
    classes, inverse, counts = np.unique(raw, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"SAV needs at least 2 classes, got {len(classes)}")
    if counts.min() < 2:
        raise ValueError(f"SAV's leave-one-out needs >= 2 examples per class; classes "
                         f"{classes[counts < 2].tolist()[:5]} have one")
    label = torch.as_tensor(inverse.reshape(-1), dtype=torch.int64)
    all_heads: list[Head] = []
    acc = []
    for block in blocks:
        all_heads.extend(block.heads)
        acc.append(_loo_accuracy(block.acts.transpose(0, 1), label, len(classes)))
    name = "sav" if probe is None else f"sav:{probe}"
    return HeadScores(tuple(all_heads), {name: torch.cat(acc).numpy()}, {name: True}, layout=layout, method="sav",
                      probe=probe, fingerprint=fingerprint,
                      data=data or f"{n} examples in {len(classes)} classes, leave-one-out",
                      meta={"n_examples": n, "n_classes": int(len(classes)), "chance": float(counts.max() / n)})

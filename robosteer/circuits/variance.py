"""Activation-variance head scores: the release's ``variance`` selector, from recorded activations.

The release (openpi_robotv ``variance_selection.py``) ranks heads by how much their
output varies over the support set's frames, with no action target:

- ``"total_variance"``: the trace of the head's covariance, sum over d of var_n(x[n, d]);
- ``"l2_variance"``: the variance over frames of the head's L2 norm |x_n|.

Both use the population variance (ddof = 0), as ``numpy.var`` does by default. Higher is
more important. The release computes in float32 and breaks ties by ``argsort`` reversed
(the later head first); here it is float64 and ``HeadScores.top`` (the earlier head first).

Usage::

    scores = variance_scores({"llm": acts}, metric="total_variance", layout=vla.head_layout)
    HeadMask.select(scores, k=20)
"""

from __future__ import annotations

import torch

from robosteer.circuits.activations import head_blocks
from robosteer.circuits.scores import HeadScores
from robosteer.sites import HeadLayout

VARIANCE_METRICS = ("total_variance", "l2_variance")


def variance_scores(acts, heads=None, *, metric: str = "total_variance", layout: HeadLayout | None = None,
                    fingerprint: str | None = None, data: str | None = None) -> HeadScores:
    """``variance_scores(acts, heads)`` -> ``HeadScores`` with one column named ``metric`` (higher is better).

    ``acts`` (N, H, D) with ``heads`` naming H, or ``{tower: (N, L, H, D)}`` (see ``activations``).
    """
    if metric not in VARIANCE_METRICS:
        raise ValueError(f"metric must be one of {', '.join(VARIANCE_METRICS)}; got {metric!r}")
    blocks = head_blocks(acts, heads, layout, dtype=torch.float64)
    names, values = [], []
    for block in blocks:
        x = block.acts  # (N, H, D)
        if metric == "total_variance":
            values.append(x.var(dim=0, unbiased=False).sum(dim=-1))  # (H,)
        else:
            values.append(x.norm(dim=-1).var(dim=0, unbiased=False))  # (H,)
        names.extend(block.heads)
    n = blocks[0].acts.shape[0]
    return HeadScores(tuple(names), {metric: torch.cat(values).numpy()}, {metric: True}, layout=layout,
                      method="variance", fingerprint=fingerprint, data=data or f"{n} frames",
                      meta={"metric": metric, "ddof": 0})

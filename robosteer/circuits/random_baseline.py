"""Random head scores: the control every head selection is compared against.

``random_scores(layout, seed)`` gives each head an independent uniform [0, 1) score
from ``numpy.random.default_rng(seed)``: the same seed gives the same scores, so a
"random heads" run is reproducible. (``HeadMask.random_like`` is the matching control
for a finished mask: same head count per tower.)
"""

from __future__ import annotations

import numpy as np

from robosteer.circuits.scores import HeadScores
from robosteer.sites import Head, HeadLayout


def random_scores(layout: HeadLayout, seed: int, towers=None, heads=None, fingerprint: str | None = None) -> HeadScores:
    """``random_scores(vla.head_layout, seed=0)`` -> ``HeadScores`` with column ``random`` (higher is better).

    Scores every head of the layout (or of ``towers``, or exactly ``heads``).
    """
    if heads is not None and towers is not None:
        raise ValueError("pass towers or heads, not both")
    if heads is None:
        names = layout.names if towers is None else tuple(towers)
        heads = [h for tower in names for h in layout.heads(tower)]
    heads = [layout.validate(Head.parse(h)) for h in heads]
    values = np.random.default_rng(seed).random(len(heads))
    return HeadScores(tuple(heads), {"random": values}, {"random": True}, layout=layout, method="random",
                      fingerprint=fingerprint, data=f"uniform random, seed {seed}", meta={"seed": seed})

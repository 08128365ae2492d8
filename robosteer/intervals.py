"""Interval statistics for success rates: one proportion, a difference, and a difference over seeds.

- ``wilson_interval(successes, n)``: the Wilson score interval of a proportion;
- ``newcombe_interval(s1, n1, s2, n2)``: the interval of a difference of two proportions;
- ``seed_bootstrap(differences, tasks)``: a stratified bootstrap of per-(task, seed) differences.

Usage::

    low, high = wilson_interval(45, 50)
    low, high = newcombe_interval(30, 50, 22, 50)
"""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """``wilson_interval(45, 50)`` -> (low, high): the Wilson score interval of a proportion."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(s1: int, n1: int, s2: int, n2: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of ``s1/n1 - s2/n2`` (Newcombe's hybrid score method from the two Wilson intervals).

    It treats the two samples as independent; for episodes run on the same evaluation seeds it is
    conservative (wider than a paired interval would be).
    """
    (l1, u1), (l2, u2) = wilson_interval(s1, n1, z), wilson_interval(s2, n2, z)  # validates the counts
    p1, p2 = s1 / n1, s2 / n2
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def seed_bootstrap(differences: list[float], tasks: list[str], resamples: int = 10_000,
                   seed: int = 0) -> tuple[float, float] | None:
    """95% percentile interval of the mean of per-(task, seed) ``differences``, resampling seeds with
    replacement within each task (a stratified bootstrap: tasks are fixed, seeds are the draws).
    None unless every task among ``tasks`` has at least three seeds (with two, the bootstrap's
    variance is half the sample's). With three it is still rough (2/3 of the sample's variance);
    the generator is fixed so reports regenerate."""
    import numpy as np

    if len(differences) != len(tasks) or not differences:
        raise ValueError(f"need one task per difference, got {len(differences)} differences and {len(tasks)} tasks")
    groups = [np.asarray([d for d, t in zip(differences, tasks) if t == task], dtype=float) for task in sorted(set(tasks))]
    if min(len(g) for g in groups) < 3:
        return None
    rng = np.random.default_rng(seed)
    total = sum(g[rng.integers(0, len(g), size=(resamples, len(g)))].sum(axis=1) for g in groups)
    means = total / len(differences)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))

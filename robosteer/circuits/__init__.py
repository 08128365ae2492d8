"""Finding the heads that matter: scores over heads, scorers and selection.

- ``scores.HeadScores``: the one object every scorer returns;
- ``activations``: the input forms scorers accept ((N, H, D) + heads, or {tower: (N, L, H, D)});
- ``knn.knn_scores``: leave-one-episode-out kNN regression of the action (vectorised);
  ``knn_reference.knn_scores_loop`` is its slow reference;
- ``released_selection.select_heads_knn``: the released selection (per-k ranking, joint scoring of
  the top N or greedy ``best_add``, best k); ``heads_json``: the released ``heads.json``;
- ``greedy.greedy_select``: robosteer's forward selection by joint kNN error (normalised heads, early stop);
- ``variance.variance_scores`` and ``mediation.cma_scores``: the release's variance and causal-mediation selectors;
- ``sav.sav_scores``: the Sparse Attention Vectors baseline; ``random_baseline.random_scores``: the control;
- ``record.record_heads``: every head's output over demonstration keyframes (input of the scorers);
- ``probes.Probe`` and ``patching.activation_patching`` / ``attribution_patching``: causal scores over
  clean vs corrupted probe pairs.

Head masks live in ``robosteer.masks``, head-map plots in ``robosteer.viz``. Names are
imported on first use, so ``import robosteer.circuits`` stays cheap.
"""

from __future__ import annotations

from robosteer.lazy import lazy_exports


_EXPORTS = {
    "HeadScores": "robosteer.circuits.scores",
    "KNNConfig": "robosteer.circuits.knn",
    "knn_scores": "robosteer.circuits.knn",
    "knn_scores_loop": "robosteer.circuits.knn_reference",
    "greedy_select": "robosteer.circuits.greedy",
    "GreedySelection": "robosteer.circuits.greedy",
    "select_heads_knn": "robosteer.circuits.released_selection",
    "KNNSelection": "robosteer.circuits.released_selection",
    "write_heads_json": "robosteer.circuits.heads_json",
    "read_heads_json": "robosteer.circuits.heads_json",
    "variance_scores": "robosteer.circuits.variance",
    "cma_scores": "robosteer.circuits.mediation",
    "cma_head_scores": "robosteer.circuits.mediation",
    "baseline_means": "robosteer.circuits.mediation",
    "sav_scores": "robosteer.circuits.sav",
    "discretize_actions": "robosteer.circuits.sav",
    "random_scores": "robosteer.circuits.random_baseline",
    "flatten_tower": "robosteer.circuits.activations",
    "head_blocks": "robosteer.circuits.activations",
    "from_cache": "robosteer.circuits.activations",
    "RecordConfig": "robosteer.circuits.record",
    "HeadActivations": "robosteer.circuits.record",
    "record_heads": "robosteer.circuits.record",
    "Probe": "robosteer.circuits.probes",
    "PatchingConfig": "robosteer.circuits.patching",
    "activation_patching": "robosteer.circuits.patching",
    "attribution_patching": "robosteer.circuits.patching",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

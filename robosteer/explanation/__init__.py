"""Explaining one action of a VLA: each LLM head's direct effect on it, where the heads look, what ablating,
patching or adapting them changes (issue #21).

- ``api.py``: :func:`explain` (also ``vla.explain`` and ``robosteer.explain``), the entry point, and its cost;
- ``record.py``: the hooked pass that records heads, residual stream and attention at the action positions;
- ``readout.py``: the frozen-norm readout, its one backward, each head's share of the output projection;
- ``result.py``: the frozen ``Explanation`` and its pandas views; ``attention.py``: its attention maps;
- ``figures.py``: its plotly figures; ``counting.py``: exact counts of forwards and backwards, for cost checks;
- ``viewer.py``: one explained episode as an offline HTML rollout viewer (``robosteer explain`` writes it).

Usage::

    from robosteer.explanation import explain
    ex = explain(vla, image, "pick up the red cube")
    ex.top(5, dim="dz"); ex.to_frame(); ex.contribution_map(dim="dz")
"""

from __future__ import annotations

from robosteer.lazy import lazy_exports

_EXPORTS = {
    "explain": "robosteer.explanation.api",
    "Explanation": "robosteer.explanation.result",
    "Decomposition": "robosteer.explanation.result",
    "Intervention": "robosteer.explanation.result",
    "BaseComparison": "robosteer.explanation.result",
    "AttentionMaps": "robosteer.explanation.attention",
    "counting": "robosteer.explanation.counting",
    "ExplainedRollout": "robosteer.explanation.viewer",
    "ExplainedStep": "robosteer.explanation.viewer",
    "explained_step": "robosteer.explanation.viewer",
    "build_viewer": "robosteer.explanation.viewer",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

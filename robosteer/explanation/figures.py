"""plotly figures of an ``Explanation``: a layer x head map of direct effects and a head's attention over a frame.

plotly is imported inside the functions (the ``viz`` extra), as in ``robosteer.viz``; the colour
conventions are the same: a diverging ``RdBu`` scale centred on 0 for signed values (blue positive,
red negative), ``Viridis`` from 0 for attention. ``robosteer.viz.save_html(fig, path)`` writes either.

Usage::

    fig = contribution_map(ex, dim="dz")       # or ex.contribution_map(dim="dz")
    fig = attention_map(ex, "llm.L3H1", view=1)
"""

from __future__ import annotations

import numpy as np

from ..sites import Head

_DIVERGING = "RdBu"
_SEQUENTIAL = "Viridis"


def _direction(quantity: str, name: str, delta: bool) -> str:
    """The title's second line: what each colour means and which way is "more"."""
    if delta:
        return (f"adapted − base: blue = the adapter made this head push {name} up (or less down), red = down; "
                "larger |value| = bigger change")
    if quantity == "logit":
        return "blue = supports the chosen bin (higher is more support), red = argues against it"
    return f"blue = pushes {name} up, red = pushes it down; larger |value| = more influence"


def contribution_map(ex, dim=0, quantity: str | None = None, step: int = 0, delta: bool = False,
                     title: str | None = None):
    """``contribution_map(ex, dim="dz")`` -> Figure: every LLM head's direct effect on one action dimension."""
    import plotly.graph_objects as go

    quantity = ex.default_quantity if quantity is None else quantity
    d = ex._dim(dim)
    name = ex.action_names[d]
    grid = ex.grid(d, quantity, step, delta)  # (L, H)
    part = ex.parts[quantity]
    order = np.argsort(-np.abs(grid).reshape(-1), kind="stable")
    rank = np.empty(order.size, dtype=int)
    rank[order] = np.arange(1, order.size + 1)
    rank = rank.reshape(grid.shape)
    unit = part.unit
    text = np.array([[f"{Head('llm', l, h)}<br>{grid[l, h]:+.4g} {unit}<br>rank {rank[l, h]} of {grid.size} by |effect|"
                      for h in range(grid.shape[1])] for l in range(grid.shape[0])], dtype=object)
    span = float(np.abs(grid).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=grid, x=list(range(grid.shape[1])), y=list(range(grid.shape[0])),
                               colorscale=_DIVERGING, zmid=0.0, zmin=-span, zmax=span, xgap=1, ygap=1,
                               text=text, hovertemplate="%{text}<extra></extra>",
                               colorbar=dict(title=dict(text=unit))))
    chunk = f", action {step + 1} of {ex.chunk}" if ex.chunk > 1 else ""
    what = "Change in direct effect" if delta else "Direct effect"
    heading = title or (f"{what} of each LLM head on {name} ({part.what}, {unit}{chunk})"
                        f"<br><sup>{_direction(quantity, name, delta)}</sup>")
    fig.update_layout(title=heading, template="plotly_white", xaxis_title="head", yaxis_title="layer")
    fig.update_yaxes(autorange="reversed")
    return fig


def attention_map(ex, head, view: int = 0, at=None, title: str | None = None):
    """``attention_map(ex, "llm.L3H1", view=0)`` -> Figure: the head's attention over the view's patch grid."""
    import plotly.graph_objects as go

    maps = ex.attention
    head = Head.parse(head, default_tower="llm")
    grid = maps.patches(head, view, at)  # (g, g)
    text = np.array([[f"patch row {r}, col {c}<br>attention {grid[r, c]:.4g}" for c in range(grid.shape[1])]
                     for r in range(grid.shape[0])], dtype=object)
    fig = go.Figure(go.Heatmap(z=grid, colorscale=_SEQUENTIAL, zmin=0.0, text=text,
                               hovertemplate="%{text}<extra></extra>", colorbar=dict(title=dict(text="attention"))))
    where = "every action position (mean)" if at is None else f"the position predicting {maps.read_labels[maps._rows(at)[0]]}"
    total = float(grid.sum())
    heading = title or (f"Attention of {head} over camera view {view} ({maps.grid}x{maps.grid} patches)"
                        f"<br><sup>from {where}: fraction of the head's attention per patch<br>(brighter = more; "
                        f"{total:.1%} of it on this view)</sup>")
    fig.update_layout(title=heading, template="plotly_white", xaxis_title="patch column", yaxis_title="patch row",
                      width=640, height=600, margin=dict(t=110))
    # square patches that fill the plot: the axes shrink to the grid ("domain") instead of padding the x range
    # with empty columns beside it
    extent = [-0.5, grid.shape[1] - 0.5]
    fig.update_xaxes(range=extent, constrain="domain")
    fig.update_yaxes(range=extent[::-1], scaleanchor="x", constrain="domain")
    return fig

"""Interactive head-maps of ``HeadScores`` (plotly).

- ``head_map(scores, column, mask=mask)``: one layer × head heatmap per tower, side by
  side (towers have different head counts, so panel widths follow them); hovering a
  cell shows the head name, its score and rank; heads of ``mask`` are outlined with
  hollow squares;
- ``compare_maps(scores, ["knn:visual", "knn:linguistic"], difference=True)``: one row
  per column (method or probe), plus a ``a − b`` row on a diverging colour scale;
- ``save_html(fig, path)``: a standalone HTML file (plotly.js embedded, opens offline),
  written atomically.

Figures are ``plotly.graph_objects.Figure``, so they render in Jupyter as they are.
plotly is imported inside the functions (the ``viz`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from robosteer.files import atomic_write_text
from robosteer.sites import Head

_SEQUENTIAL = "Viridis"
_DIVERGING = "RdBu"
_ROW_GAP = 0.08


def _towers(scores, towers: Sequence[str] | None) -> list[str]:
    present = scores.towers
    if towers is None:
        return present
    missing = [t for t in towers if t not in present]
    if missing:
        raise ValueError(f"no scores for towers {missing}; scored towers are {present}")
    return list(towers)


def _hover(scores, tower: str, grid: np.ndarray, label: str, ranks: dict | None) -> np.ndarray:
    """(layers, heads) array of hover strings: head name, value, and rank when given."""
    text = np.empty(grid.shape, dtype=object)
    for layer in range(grid.shape[0]):
        for head in range(grid.shape[1]):
            name = str(Head(tower, layer, head))
            value = grid[layer, head]
            line = f"{name}<br>{label} = {'not scored' if np.isnan(value) else f'{value:.6g}'}"
            if ranks is not None and name in ranks:
                line += f"<br>rank {ranks[name]} of {len(ranks)}"
            text[layer, head] = line
    return text


def _subplots(n_rows: int, towers: list[str], scores, row_titles: list[str]):
    from plotly.subplots import make_subplots

    widths = [scores.grid(t, scores.default_column).shape[1] for t in towers]
    titles = [f"{row} · {tower}" if n_rows > 1 else tower for row in row_titles for tower in towers]
    return make_subplots(rows=n_rows, cols=len(towers), column_widths=[w / sum(widths) for w in widths],
                         subplot_titles=titles, horizontal_spacing=0.06, vertical_spacing=_ROW_GAP)


def _add_row(fig, scores, towers: list[str], row: int, n_rows: int, z_by_tower: dict, label: str, ranks: dict | None,
             colorscale: str, zmid: float | None, mask) -> None:
    """One row of heatmaps sharing one colour axis (``coloraxis{row}``), plus the mask overlay."""
    import plotly.graph_objects as go

    axis = "coloraxis" if row == 1 else f"coloraxis{row}"
    finite = np.concatenate([z[np.isfinite(z)] for z in z_by_tower.values()] or [np.zeros(0)])
    span = float(np.abs(finite).max()) if zmid is not None and finite.size else None
    row_height = (1 - _ROW_GAP * (n_rows - 1)) / n_rows
    fig.update_layout({axis: dict(
        colorscale=colorscale,
        **({"cmid": zmid, "cmin": -span, "cmax": span} if span else {}),
        colorbar=dict(title=dict(text=label), len=row_height, y=1 - (row - 0.5) * row_height - (row - 1) * _ROW_GAP,
                      yanchor="middle"),
    )})
    for col, tower in enumerate(towers, start=1):
        z = z_by_tower[tower]
        fig.add_trace(go.Heatmap(z=z, x=list(range(z.shape[1])), y=list(range(z.shape[0])), coloraxis=axis,
                                 text=_hover(scores, tower, z, label, ranks), hovertemplate="%{text}<extra></extra>",
                                 name=f"{label} · {tower}", xgap=1, ygap=1), row=row, col=col)
        fig.update_xaxes(title_text="head", row=row, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, autorange="reversed", row=row, col=col)
        chosen = [] if mask is None else [h for h in mask.heads if h.tower == tower]
        if chosen:
            fig.add_trace(go.Scatter(
                x=[h.head for h in chosen], y=[h.layer for h in chosen], mode="markers",
                marker=dict(symbol="square-open", size=14, color="black", line=dict(width=2)),
                text=[f"{h} (in mask)" for h in chosen], hovertemplate="%{text}<extra></extra>",
                name=f"mask · {tower}", showlegend=False), row=row, col=col)


def _ranks(scores, column: str) -> dict[str, int]:
    scored = ~np.isnan(scores.values(column))
    ranks = scores.rank(column)
    return {str(h): int(r) for h, r, ok in zip(scores.heads, ranks, scored) if ok}


def head_map(scores, column: str | None = None, towers: Sequence[str] | None = None, mask=None,
             title: str | None = None):
    """``head_map(scores, "knn", mask=mask)`` -> plotly Figure: a layer × head heatmap per tower.

    Lower-is-better columns use a reversed colour scale, so bright always means important.
    """
    column = scores.default_column if column is None else column
    towers = _towers(scores, towers)
    fig = _subplots(1, towers, scores, [column])
    colorscale = _SEQUENTIAL if scores.higher_is_better[column] else f"{_SEQUENTIAL}_r"
    _add_row(fig, scores, towers, 1, 1, {t: scores.grid(t, column) for t in towers}, column,
             _ranks(scores, column), colorscale, None, mask)
    fig.update_layout(title=title or f"{column} head scores ({scores.method or 'scores'})", template="plotly_white")
    return fig


def compare_maps(scores, columns: Sequence[str], towers: Sequence[str] | None = None, mask=None,
                 difference: bool = False, title: str | None = None):
    """``compare_maps(scores, ["knn:visual", "knn:linguistic"], difference=True)`` -> Figure, one row per column.

    ``difference=True`` (exactly two columns) adds a row of ``a − b`` on a diverging
    colour scale centred on 0.
    """
    columns = list(columns)
    if not columns:
        raise ValueError("compare_maps needs at least one column")
    if difference and len(columns) != 2:
        raise ValueError(f"difference=True compares exactly two columns, got {columns}")
    towers = _towers(scores, towers)
    rows = columns + ([f"{columns[0]} − {columns[1]}"] if difference else [])
    fig = _subplots(len(rows), towers, scores, rows)
    for row, column in enumerate(columns, start=1):
        colorscale = _SEQUENTIAL if scores.higher_is_better[column] else f"{_SEQUENTIAL}_r"
        _add_row(fig, scores, towers, row, len(rows), {t: scores.grid(t, column) for t in towers}, column,
                 _ranks(scores, column), colorscale, None, mask)
    if difference:
        a, b = columns
        diff = {t: scores.grid(t, a) - scores.grid(t, b) for t in towers}
        _add_row(fig, scores, towers, len(rows), len(rows), diff, rows[-1], None, _DIVERGING, 0.0, mask)
    fig.update_layout(title=title or f"head scores: {', '.join(columns)}", template="plotly_white",
                      height=max(350, 320 * len(rows)))
    return fig


def save_html(fig, path: str | Path) -> Path:
    """``save_html(fig, "heads.html")``: standalone HTML with plotly.js embedded (no network needed to open it).
    The figure's element id is a hash of the figure (plotly's default is a random UUID), so the same figure writes
    the same file and two different figures inlined into one page do not draw into one element."""
    import hashlib

    div_id = "robosteer-" + hashlib.sha256(fig.to_json().encode()).hexdigest()[:12]
    return atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True, div_id=div_id))

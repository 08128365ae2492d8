"""Interactive head-maps of ``HeadScores`` (plotly).

- ``head_map(scores, column, mask=mask)``: one layer × head heatmap per tower, side by
  side (towers have different head counts, so panel widths follow them). The title says
  what the score measures and which way is better; a second line says where it came from
  (task, policy, data: from the scores' ``meta["task"]``, ``meta["policy"]``, ``fingerprint``
  and ``data``). Hovering a cell shows the head name, its score and rank; heads of ``mask``
  are outlined (a dark line on a white halo, visible on any colour);
- ``compare_maps(scores, ["knn:visual", "knn:linguistic"], difference=True)``: one row
  per column (method or probe), plus a ``a − b`` row;
- ``save_html(fig, path)``: an HTML page that loads ``plotly.min.js`` from its own folder
  (written there once, shared by every page in it; opens offline); ``self_contained=True``
  embeds plotly.js instead, for one file to send. Written atomically;
- ``notebook_renderer()``: figures shown in a notebook also carry a static PNG (kaleido), so a
  notebook saved with its outputs shows them on GitHub, nbviewer and ``jupyter nbconvert`` too.

Colours: a sequential scale (bright = important) for one-signed scores, a diverging
``RdBu`` centred on 0 with a symmetric range for scores of both signs (patching scores,
differences), blue = the important sign. Figures are ``plotly.graph_objects.Figure``, so
they render in Jupyter as they are. plotly is imported inside the functions (the ``viz`` extra).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from robosteer.files import atomic_write_text
from robosteer.sites import Head

log = logging.getLogger(__name__)
_SEQUENTIAL = "Viridis"
_DIVERGING = "RdBu"  # plotly's RdBu runs red (low) to blue (high)
_ROW_PX, _GAP_PX = 300, 110  # compare_maps: plot height per row, and the room between rows for axis and panel titles
_TOP_PX, _BOTTOM_PX = 100, 60

# column (without its probe) -> (title name, colour-bar name, unit, what a more important head does; None for
# columns that are not importances)
_MEANINGS = {
    "knn": ("kNN regression score", "kNN score", "1 − MSE/mean-action MSE",
            "the head's activations predict the action better"),
    "knn/mse": ("kNN regression error", "kNN error", "action MSE", "the head's activations predict the action better"),
    "knn/k": ("neighbours k chosen by kNN", "k", "neighbours", None),
    "sav": ("SAV score", "SAV score", "LOO accuracy", "the head's activations tell the action classes apart better"),
    "activation": ("activation patching score", "patching", "gap recovered",
                   "patching in the head's clean output restores more"),
    "mean_ablation": ("mean-ablation score", "ablation", "metric drop",
                      "replacing the head by its mean hurts the action more"),
    "attribution": ("attribution patching score", "attribution", "est. gap recovered",
                    "the head's clean output restores more (first-order estimate)"),
    "cma": ("causal mediation score", "CMA", "action MSE rise", "replacing the head by its mean hurts the action more"),
    "cma/mse": ("action MSE with the head mean-ablated", "ablated", "action MSE",
                "replacing the head by its mean hurts the action more"),
    "total_variance": ("variance of the head's output", "variance", "total variance",
                       "the head's output varies more across frames"),
    "l2_variance": ("variance of the head's output norm", "norm variance", "variance of |z|",
                    "the head's output norm varies more across frames"),
    "random": ("random control score", "random", "uniform draw", None),
    "combined:zscore": ("combined score", "combined", "mean z-score",
                        "the head ranks higher across the combined scores"),
    "combined:rank": ("combined rank", "combined", "mean rank", "the head ranks higher across the combined scores"),
}


def describe(scores, column: str) -> tuple[str, str]:
    """``describe(scores, "knn")`` -> (title line, colour-bar title): what the column measures and which way is better.

    e.g. ``"kNN regression score (1 − MSE/MSE(mean)): higher = the head's activations predict the action better"``.
    """
    main, _, diagnostic = column.partition("/")
    base, _, probe = main.partition(":")
    key, probe = (main, "") if base == "combined" else (base + (f"/{diagnostic}" if diagnostic else ""), probe)
    name, short, unit, better = _MEANINGS.get(key, (column, column, "score", "the head matters more"))
    if probe == "combined":  # discover's "activation:combined": the probes' scores, z-scored and averaged
        name, unit, probe = f"{name}, mean z-score over probes", "mean z-score", ""
    where = f", {probe} probe" if probe else ""
    direction = "higher" if scores.higher_is_better[column] else "lower"
    if better is None:
        return f"{name} ({unit}{where}): a diagnostic or control, not an importance", f"{short}<br>{unit}"
    return f"{name} ({unit}{where}): {direction} = {better}", f"{short}<br>{unit}<br>{direction} = better"


def _provenance(scores, mask_count: int) -> str:
    """The subtitle: task, policy, data and what the outlines are, from what the scores recorded."""
    metas = [dict(scores.meta)] + [dict(s.get("meta") or {}) for s in scores.meta.get("sources", [])]

    def recorded(key: str) -> str | None:
        values = list(dict.fromkeys(str(m[key]) for m in metas if m.get(key)))
        return ", ".join(values) or None

    parts = []
    task = recorded("task")
    if task:
        parts.append(f"task {task}")
    policy = recorded("policy")
    model = f"model {scores.fingerprint[:10]}" if scores.fingerprint else None
    if policy:
        parts.append(f"policy {policy}" + (f" ({model})" if model else ""))
    elif model:
        parts.append(model)
    if scores.data:  # merged scores join their sources' data with "; ": activation and attribution share theirs
        parts.append("; ".join(dict.fromkeys(scores.data.split("; "))))
    elif scores.meta.get("n_frames"):
        parts.append(f"{scores.meta['n_frames']} frames from {scores.meta.get('n_episodes', '?')} episodes")
    if mask_count:
        parts.append(f"outlined: the {mask_count} selected heads")
    return " · ".join(parts)


def _towers(scores, towers: Sequence[str] | None) -> list[str]:
    present = scores.towers
    if towers is None:
        return present
    missing = [t for t in towers if t not in present]
    if missing:
        raise ValueError(f"no scores for towers {missing}; scored towers are {present}")
    return list(towers)


def _hover(tower: str, grid: np.ndarray, label: str, ranks: dict | None, chosen: set) -> np.ndarray:
    """(layers, heads) array of hover strings: head name, value, rank when given, and whether it is selected."""
    text = np.empty(grid.shape, dtype=object)
    for layer in range(grid.shape[0]):
        for head in range(grid.shape[1]):
            name = str(Head(tower, layer, head))
            value = grid[layer, head]
            line = f"{name}<br>{label} = {'not scored' if np.isnan(value) else f'{value:.6g}'}"
            if ranks is not None and name in ranks:
                line += f"<br>rank {ranks[name]} of {len(ranks)}"
            if Head(tower, layer, head) in chosen:
                line += "<br>selected (in the mask)"
            text[layer, head] = line
    return text


def _colours(values: np.ndarray, higher_is_better: bool, signed: bool | None = None) -> dict:
    """The colour axis: sequential (bright = important) for one sign, diverging around 0 for both signs."""
    finite = values[np.isfinite(values)]
    if signed is None:
        signed = bool(finite.size) and finite.min() < 0 < finite.max()
    if not signed:
        return dict(colorscale=_SEQUENTIAL if higher_is_better else f"{_SEQUENTIAL}_r")
    span = float(np.abs(finite).max()) if finite.size else 1.0
    return dict(colorscale=_DIVERGING if higher_is_better else f"{_DIVERGING}_r", cmid=0.0, cmin=-span, cmax=span)


def _subplots(n_rows: int, towers: list[str], scores, row_titles: list[str]):
    from plotly.subplots import make_subplots

    widths = [scores.grid(t, scores.default_column).shape[1] for t in towers]
    # the row's name on its first panel only: repeated, long names run into the next panel's title
    titles = [f"{row} · {tower}" if n_rows > 1 and col == 0 else tower for row in row_titles
              for col, tower in enumerate(towers)]
    gap = _GAP_PX / (n_rows * _ROW_PX + (n_rows - 1) * _GAP_PX) if n_rows > 1 else 0.0
    return make_subplots(rows=n_rows, cols=len(towers), column_widths=[w / sum(widths) for w in widths],
                         subplot_titles=titles, horizontal_spacing=0.06, vertical_spacing=gap)


def _outline(heads: list[Head], inset: float = 0.46) -> tuple[list, list]:
    """x and y of closed squares around each head's cell, separated by ``None`` (one trace draws them all)."""
    xs: list = []
    ys: list = []
    for h in heads:
        x0, x1, y0, y1 = h.head - inset, h.head + inset, h.layer - inset, h.layer + inset
        xs += [x0, x1, x1, x0, x0, None]
        ys += [y0, y0, y1, y1, y0, None]
    return xs, ys


def _add_row(fig, towers: list[str], row: int, z_by_tower: dict, label: str, bar_title: str, ranks: dict | None,
             colours: dict, mask) -> None:
    """One row of heatmaps sharing one colour axis (``coloraxis{row}``), plus the outlines of the mask's heads."""
    import plotly.graph_objects as go

    axis = "coloraxis" if row == 1 else f"coloraxis{row}"
    low, high = fig.get_subplot(row, 1).yaxis.domain
    fig.update_layout({axis: dict(**colours, colorbar=dict(title=dict(text=bar_title), len=high - low,
                                                            y=(low + high) / 2, yanchor="middle"))})
    selected = set() if mask is None else set(mask.heads)
    for col, tower in enumerate(towers, start=1):
        z = z_by_tower[tower]
        fig.add_trace(go.Heatmap(z=z, x=list(range(z.shape[1])), y=list(range(z.shape[0])), coloraxis=axis,
                                 text=_hover(tower, z, label, ranks, selected), hovertemplate="%{text}<extra></extra>",
                                 name=f"{label} · {tower}", xgap=1, ygap=1), row=row, col=col)
        # whole-number ticks (plotly picks halves on tall panels), thinned on big grids
        fig.update_xaxes(title_text="head", dtick=-(-z.shape[1] // 16), row=row, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, autorange="reversed", dtick=-(-z.shape[0] // 16),
                         row=row, col=col)
        chosen = [h for h in selected if h.tower == tower]
        if chosen:
            xs, ys = _outline(sorted(chosen, key=lambda h: (h.layer, h.head)))
            # a white halo under a dark line: one of the two shows on every colour of either scale; hover
            # skips them, so the cell's own hover (name, score, rank, "selected") shows through
            for name, colour, width in ((f"mask halo · {tower}", "white", 6), (f"mask · {tower}", "#111111", 2.5)):
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=width),
                                         hoverinfo="skip", name=name, showlegend=False), row=row, col=col)


def _ranks(scores, column: str) -> dict[str, int]:
    scored = ~np.isnan(scores.values(column))
    ranks = scores.rank(column)
    return {str(h): int(r) for h, r, ok in zip(scores.heads, ranks, scored) if ok}


def _heading(title: str, subtitle: str) -> dict:
    text = f"{title}<br><sup>{subtitle}</sup>" if subtitle else title
    return dict(text=text, x=0.01, xanchor="left", xref="paper", y=1, yref="container", yanchor="top", pad=dict(t=16))


def head_map(scores, column: str | None = None, towers: Sequence[str] | None = None, mask=None,
             title: str | None = None, subtitle: str | None = None):
    """``head_map(scores, "knn", mask=mask)`` -> plotly Figure: a layer × head heatmap per tower.

    ``title`` defaults to what the score means and which way is better (``describe``); ``subtitle`` to the
    task, policy and data the scores record (``""`` for none). Lower-is-better columns use a reversed colour
    scale, so bright always means important; scores of both signs a diverging scale centred on 0.
    """
    column = scores.default_column if column is None else column
    towers = _towers(scores, towers)
    fig = _subplots(1, towers, scores, [column])
    grids = {t: scores.grid(t, column) for t in towers}
    line, bar = describe(scores, column)
    colours = _colours(np.concatenate([g.ravel() for g in grids.values()]), scores.higher_is_better[column])
    _add_row(fig, towers, 1, grids, column, bar, _ranks(scores, column), colours, mask)
    shown = 0 if mask is None else sum(h.tower in towers for h in mask.heads)
    layers = max(g.shape[0] for g in grids.values())
    fig.update_layout(title=_heading(title or line, _provenance(scores, shown) if subtitle is None else subtitle),
                      template="plotly_white", height=max(420, _TOP_PX + _BOTTOM_PX + 22 * layers),
                      margin=dict(t=_TOP_PX, b=_BOTTOM_PX))
    return fig


def compare_maps(scores, columns: Sequence[str], towers: Sequence[str] | None = None, mask=None,
                 difference: bool = False, title: str | None = None, subtitle: str | None = None):
    """``compare_maps(scores, ["knn:visual", "knn:linguistic"], difference=True)`` -> Figure, one row per column.

    ``difference=True`` (exactly two columns) adds a row of ``a − b`` (raw values) on a diverging
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
        grids = {t: scores.grid(t, column) for t in towers}
        colours = _colours(np.concatenate([g.ravel() for g in grids.values()]), scores.higher_is_better[column])
        _add_row(fig, towers, row, grids, column, describe(scores, column)[1], _ranks(scores, column), colours, mask)
    if difference:
        a, b = columns
        diff = {t: scores.grid(t, a) - scores.grid(t, b) for t in towers}
        colours = _colours(np.concatenate([d.ravel() for d in diff.values()]), True, signed=True)
        _add_row(fig, towers, len(rows), diff, rows[-1], "difference<br>(raw values)", None, colours, mask)
    shown = 0 if mask is None else sum(h.tower in towers for h in mask.heads)
    plots = len(rows) * _ROW_PX + (len(rows) - 1) * _GAP_PX
    fig.update_layout(title=_heading(title or f"head scores: {', '.join(columns)}",
                                     _provenance(scores, shown) if subtitle is None else subtitle),
                      template="plotly_white", height=_TOP_PX + _BOTTOM_PX + plots,
                      margin=dict(t=_TOP_PX, b=_BOTTOM_PX))
    return fig


def save_html(fig, path: str | Path, self_contained: bool = False) -> Path:
    """``save_html(fig, "runs/heads/heads.html")``: the page, and ``plotly.min.js`` beside it (opens offline).

    Every page saved into one folder shares that one copy of plotly.js (about 4.8 MB), rewritten only when it
    differs from the installed plotly's. ``self_contained=True`` embeds plotly.js in the page instead: one
    file to send to someone. The figure's element id is a hash of the figure (plotly's default is a random
    UUID), so the same figure writes the same file and two different figures inlined into one page do not
    draw into one element.
    """
    import hashlib

    path = Path(path)
    div_id = "robosteer-" + hashlib.sha256(fig.to_json().encode()).hexdigest()[:12]
    if not self_contained:
        import plotly.offline

        bundle, script = plotly.offline.get_plotlyjs(), path.parent / "plotly.min.js"
        if not script.is_file() or script.read_text(encoding="utf-8") != bundle:
            atomic_write_text(script, bundle)
    return atomic_write_text(path, fig.to_html(include_plotlyjs=True if self_contained else "directory",
                                               full_html=True, div_id=div_id))


PNG_RENDERER = "robosteer_png"  # notebook_renderer's plotly renderer: each figure's PNG copy
_PNG_ATTEMPTS = 3  # kaleido now and then reads its page before the page has loaded: retried
_KALEIDO_TIMEOUT_S = 120  # one browser call; a hung browser must not hang the notebook


def notebook_renderer(static: bool = True, width: int = 960) -> str:
    """``notebook_renderer()`` -> the plotly renderer it made the default: ``"plotly_mimetype+robosteer_png"``
    or ``"plotly_mimetype"``.

    In a notebook saved with its outputs, a figure that carries only plotly's mimetype shows only where plotly.js
    runs (Jupyter); GitHub, nbviewer and ``jupyter nbconvert`` show nothing for it. With ``static`` (default) and
    kaleido able to render here (installed, with a Chrome or Chromium it finds on ``PATH`` or through
    ``BROWSER_PATH``), every figure's output carries a PNG copy (``width`` pixels wide, the figure's own height)
    beside the interactive figure, which those show. Otherwise figures keep the plotly mimetype alone, with a
    logged warning saying why; a single figure that kaleido fails to draw does too. It never embeds a copy of
    plotly.js in the notebook.
    """
    import plotly.io as pio

    name = "plotly_mimetype"
    if static:
        missing = _static_images_unavailable()
        if missing is None:
            pio.renderers[PNG_RENDERER] = _png_renderer(width)
            name += f"+{PNG_RENDERER}"
        else:
            log.warning("figures get no static PNG copy (GitHub and nbconvert will not show them): %s", missing)
    pio.renderers.default = name
    return name


class _Kaleido:
    """One kaleido browser (headless Chrome/Chromium) for every PNG of the process, on its own event-loop thread.

    ``plotly.io.to_image`` starts a browser per figure, and on this busy 2-core machine kaleido 1.5 often read its
    page before the page had loaded (``ReferenceError: kaleido_scopes is not defined``: 3 of 6 calls in one
    measurement); one browser opened once, whose tab kaleido reloads between figures, failed in none of 10. Every
    call has a timeout; the browser closes when the process exits.
    """

    def __init__(self) -> None:
        import asyncio
        import atexit
        import threading

        import kaleido

        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="robosteer-kaleido", daemon=True).start()
        try:
            self._kaleido = self._call(self._open(kaleido))
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        atexit.register(self.close)

    @staticmethod
    async def _open(kaleido):
        browser = kaleido.Kaleido(mathjax=False)  # the figures use no LaTeX: no MathJax fetched from a CDN
        await browser.open()
        return browser

    def _call(self, coroutine):
        import asyncio

        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(_KALEIDO_TIMEOUT_S)
        except BaseException:
            future.cancel()
            raise

    def png(self, fig_dict: dict, width: int | None = None, height: int | None = None) -> bytes:
        """The figure as PNG bytes: ``width`` x ``height`` pixels, by default the figure's own or 700 x 500."""
        layout = fig_dict.get("layout") or {}
        opts = dict(format="png", width=width or layout.get("width") or 700, height=height or layout.get("height") or 500)
        error: Exception | None = None
        for _ in range(_PNG_ATTEMPTS):
            try:
                return self._call(self._kaleido.calc_fig(fig_dict, opts=opts))
            except Exception as err:  # kaleido raises several types (a page race, a dead browser, a timeout)
                error = err
        raise error

    def close(self) -> None:
        """Close the browser (also done at exit); one that will not close is left to the end of the process."""
        if self._kaleido is None:
            return
        browser, self._kaleido = self._kaleido, None
        try:
            self._call(browser.close())
        except Exception as err:
            log.debug("kaleido's browser did not close cleanly: %s", _why(err))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)


_BROWSER: _Kaleido | None = None


def _why(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _png_renderer(width: int):
    """A plotly renderer (a ``MimetypeRenderer``) adding the figure's PNG to its output, or nothing (logged)."""
    import base64

    from plotly.io.base_renderers import MimetypeRenderer

    class StaticPNG(MimetypeRenderer):
        def to_mimebundle(self, fig_dict):
            try:
                png = _BROWSER.png(fig_dict, width=width)
            except Exception as err:
                log.warning("this figure gets no static PNG copy: kaleido failed (%s)", _why(err))
                return {}
            return {"image/png": base64.b64encode(png).decode("ascii")}

    return StaticPNG()


def _static_images_unavailable() -> str | None:
    """Why kaleido cannot render a PNG here, or None when it can (it opens the browser and draws a tiny figure)."""
    global _BROWSER
    try:
        import kaleido  # noqa: F401  (plotly's static image engine, the notebook extra)
    except ImportError:
        return "kaleido is not installed (pip install 'robosteer[notebook]')"
    try:
        if _BROWSER is None:
            _BROWSER = _Kaleido()
        _BROWSER.png({"data": [], "layout": {}}, width=8, height=8)
    except Exception as err:  # no Chrome/Chromium, or one that cannot start: any reason means no PNGs
        if _BROWSER is not None:
            _BROWSER.close()
            _BROWSER = None
        return f"kaleido cannot render ({_why(err)})"
    return None

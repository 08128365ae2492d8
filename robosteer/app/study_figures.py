"""The study's figures, from a ``StudyReport``: target success per task and method, and target success against
the success kept on the pretraining tasks; interactive (plotly) and static (matplotlib, for a PNG).

Usage::

    fig = success_figure(StudyReport.load("runs/study"))      # or report.figure()
    static_success_figure(report).savefig("success.png")      # or report.static_figure()
"""

from __future__ import annotations

from robosteer.app.study import HIGHLIGHT as _HIGHLIGHT

# the rates drawn are ``study_report.Pooled`` (successes / episodes with a Wilson interval); study_report imports
# this module when asked for a figure, so it is not imported here

# one colour per method, shared by the interactive and the static figure; the method under test is drawn
# opaque and outlined, the others muted
_PALETTE = ("#7f7f7f", "#1f77b4", "#aec7e8", "#d62728", "#ff9896", "#9467bd", "#2ca02c", "#8c564b")


def _error_bars(pooled: list) -> tuple[list[float], list[float]]:
    """Distances from each rate down and up to its Wilson interval's ends (both figures' error bars)."""
    return [p.rate - p.ci95[0] for p in pooled], [p.ci95[1] - p.rate for p in pooled]


def _span(pooled: list) -> tuple[float, float]:
    """An axis range around the points and their intervals, with a margin (the scatter's points crowd a corner)."""
    low, high = min(p.ci95[0] for p in pooled), max(p.ci95[1] for p in pooled)
    pad = max(0.03, 0.08 * (high - low))
    return max(-pad, low - pad), min(1 + pad, high + pad)


def success_figure(report):
    """Plotly: target success per task and method (left), and each method's pooled target success against
    the success it kept on the retention tasks (right), all with 95% Wilson intervals. The title is the finding
    (``StudyReport.headline``); heads-knn is drawn opaque and outlined, the other methods muted; tasks where every
    method scored 0 are named under the bars instead of drawn."""
    from plotly.subplots import make_subplots

    def errors(pooled: list) -> dict:
        down, up = _error_bars(pooled)
        return dict(type="data", symmetric=False, array=up, arrayminus=down)

    tasks, note = report._drawn_tasks()
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.09, subplot_titles=(
        "target success per task (95% Wilson intervals; missing cells are gaps)", "target success vs success kept"))
    drawn: list[tuple] = []
    for i, m in enumerate(report.methods):
        color, key = _PALETTE[i % len(_PALETTE)], m == _HIGHLIGHT
        outline = dict(color="black", width=1.5 if key else 0)
        pooled = [report.target(m, t) for t in tasks]
        fig.add_bar(name=m, x=tasks, y=[p.rate for p in pooled], error_y=errors(pooled), marker_color=color,
                    marker_line=outline, opacity=1.0 if key else 0.55, legendgroup=m,
                    customdata=[[p.successes, p.episodes] for p in pooled],
                    hovertemplate=f"{m}<br>%{{x}}: %{{y:.2f}} (%{{customdata[0]}}/%{{customdata[1]}})<extra></extra>",
                    row=1, col=1)
        target, kept = report.target(m), report.retention(m)
        if not target.episodes or not kept.episodes:
            continue
        drawn.append((target, kept))
        params = report.mean_of(m, "trainable_params")
        fig.add_scatter(x=[kept.rate], y=[target.rate], mode="markers", name=m, legendgroup=m, showlegend=False,
                        marker=dict(size=15 if key else 10, color=color, opacity=1.0 if key else 0.6, line=outline),
                        error_x=errors([kept]), error_y=errors([target]),
                        hovertemplate=(f"{m}<br>target %{{y:.2f}} ({target.successes}/{target.episodes})<br>"
                                       f"kept %{{x:.2f}} ({kept.successes}/{kept.episodes})<br>"
                                       f"{params:,.0f} trainable parameters<extra></extra>"), row=1, col=2)
    title, subtitle = report.headline()
    fig.update_layout(barmode="group", template="plotly_white", height=540, margin=dict(t=110),
                      title=dict(text=f"{title}<br><sup>{subtitle}</sup>", x=0.01, xanchor="left"))
    fig.update_yaxes(title_text="target success", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text=note, row=1, col=1)
    if drawn:
        fig.update_yaxes(range=_span([t for t, _ in drawn]), row=1, col=2)
        fig.update_xaxes(range=_span([k for _, k in drawn]), row=1, col=2)
    fig.update_yaxes(title_text="target success (all finished cells)", row=1, col=2)
    fig.update_xaxes(title_text=report._kept_title("<br>"), title_font_size=12, row=1, col=2)
    return fig

def static_success_figure(report):
    """The same two panels as ``success_figure``, drawn with matplotlib for a PNG that renders where HTML does not
    (a Markdown viewer, a paper). Returns a ``matplotlib.figure.Figure`` (no pyplot state is touched)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5.8), layout="constrained")
    bars, scatter = fig.subplots(1, 2, width_ratios=[0.6, 0.4])
    tasks, note = report._drawn_tasks()
    width = 0.8 / max(1, len(report.methods))
    drawn: list[tuple] = []
    for i, m in enumerate(report.methods):
        color, key = _PALETTE[i % len(_PALETTE)], m == _HIGHLIGHT
        look = dict(alpha=1.0 if key else 0.55, zorder=3 if key else 2)
        pooled = [report.target(m, t) for t in tasks]
        shown = [(j, p) for j, p in enumerate(pooled) if p.episodes]  # missing cells stay gaps
        if shown:
            x = [j + (i - (len(report.methods) - 1) / 2) * width for j, _ in shown]
            ps = [p for _, p in shown]
            bars.bar(x, [p.rate for p in ps], width, yerr=_error_bars(ps), color=color, label=m, capsize=2,
                     edgecolor="black" if key else "none", linewidth=1.2 if key else 0, **look,
                     error_kw=dict(elinewidth=0.8, alpha=look["alpha"]))
        target, kept = report.target(m), report.retention(m)
        if target.episodes and kept.episodes:
            drawn.append((target, kept))
            scatter.errorbar([kept.rate], [target.rate], xerr=_error_bars([kept]), yerr=_error_bars([target]),
                             fmt="o", color=color, markersize=11 if key else 7, capsize=3, label=m,
                             markeredgecolor="black" if key else color, **look)
    bars.set_xticks(range(len(tasks)), tasks, rotation=15)
    bars.set(ylim=(0, 1), ylabel="target success")
    bars.set_title("target success per task (95% Wilson intervals; missing cells are gaps)", fontsize=10)
    bars.set_xlabel(note, fontsize=9)
    scatter.set(ylabel="target success (all finished cells)")
    scatter.set_title("target success vs success kept", fontsize=10)
    scatter.set_xlabel(report._kept_title("\n"), fontsize=9)
    if drawn:
        scatter.set(ylim=_span([t for t, _ in drawn]), xlim=_span([k for _, k in drawn]))
    for legend in (bars.legend(fontsize=8, ncols=2), scatter.legend(fontsize=8, loc="best") if drawn else None):
        for text in legend.get_texts() if legend else ():
            text.set_fontweight("bold" if text.get_text() == _HIGHLIGHT else "normal")
    title, subtitle = report.headline()
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=11)
    return fig

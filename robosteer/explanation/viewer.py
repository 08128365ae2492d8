"""The rollout viewer: one explained closed-loop episode as a self-contained, offline HTML page.

Pure: data in, HTML string out (no simulator, no model, no files). ``explained_step`` turns one control step's
``Explanation`` into an :class:`ExplainedStep`; an :class:`ExplainedRollout` holds the episode; :func:`build_viewer`
makes the page and :func:`episode_json` its ``explain.json``. ``robosteer explain`` (``app/explain_episode.py``)
runs an episode and writes both.

The page embeds plotly.js once (no CDN, no network) and draws, for the step chosen on a slider:
the camera frame(s) with a head's attention over the patches (a head selector; by default each step's
top head), the top heads by |direct effect| (stacked per action dimension; the heads of a mask or heads
adapter starred), and the action trace of the whole episode (steered and base when an adapter is
explained against its base) with a marker at the step. ``viewer.html#step=12&head=llm.L3H1`` opens there;
``#selftest`` moves the slider once on load and writes what it saw (the drawn frame's hash before and
after, the JavaScript errors) as JSON into ``<pre id="selftest-result">``, for the browser test.

Usage::

    steps = [explained_step(t, robosteer.explain(vla, image_t, text, base=base)) for t, image_t in ...]
    rollout = ExplainedRollout(task="lift/base", seed=0, instruction=text, success=True, policy="default", heads=heads,
                               action_names=names, views=("agentview",), frames=frames, actions=actions, steps=steps)
    html, record = build_viewer(rollout), episode_json(rollout)   # viewer.html's text, explain.json's dict
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass

import numpy as np

from .result import UNITS, WHAT

FORMAT = "robosteer.explain_episode"  # explain.json's format name
FORMAT_VERSION = 1
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
# the attention overlay, a spotlight without hue (objects come in every hue): patches the head reads most stay clear
_OVERLAY = [[0.0, "rgba(0,0,0,0.72)"], [1.0, "rgba(0,0,0,0)"]]


def _array(value, dtype, where: str) -> np.ndarray:
    """A read-only copy; a ValueError naming ``where`` for NaN or infinity (the page's JSON cannot hold them)."""
    out = np.array(value, dtype=dtype, copy=True)
    if dtype != np.uint8 and not np.all(np.isfinite(out)):
        raise ValueError(f"{where} must be finite numbers")
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class ExplainedStep:
    """What the viewer shows of one explained control step (the first action of a chunk)."""

    step: int  # the control step (index into ExplainedRollout.actions)
    action: np.ndarray  # (A,) the explained model's action, action units
    effects: np.ndarray  # (n_heads, A) each LLM head's direct effect on it (ExplainedRollout.heads order)
    attention: np.ndarray  # (n_heads, n_views, grid, grid) each head's attention per patch (mean over read positions)
    base_action: np.ndarray | None = None  # (A,) the base model's action on the same observation
    delta: np.ndarray | None = None  # (n_heads, A) adapted - base direct effects

    def __post_init__(self) -> None:
        where = f"ExplainedStep(step={self.step})"
        if self.step < 0 or (self.base_action is None) != (self.delta is None):
            raise ValueError(f"{where}: step must be >= 0, and base_action and delta given together (explain(base=))")
        for name, dtype in (("action", np.float64), ("effects", np.float64), ("attention", np.float32),
                            ("base_action", np.float64), ("delta", np.float64)):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _array(getattr(self, name), dtype, f"{where}.{name}"))
        n, a = len(self.effects), self.action.size
        shapes = [(self.action.shape, (a,)), (self.effects.shape, (n, a)), (self.attention.shape[:1], (n,))]
        if self.delta is not None:
            shapes += [(self.base_action.shape, (a,)), (self.delta.shape, (n, a))]
        if any(got != want for got, want in shapes) or self.attention.ndim != 4:
            raise ValueError(f"{where}: expected action (A,), effects and delta (n_heads, A), attention (n_heads, "
                             f"n_views, grid, grid); got {self.action.shape}, {self.effects.shape}, "
                             f"{self.attention.shape}")


def explained_step(step: int, ex) -> ExplainedStep:
    """``explained_step(t, robosteer.explain(vla, image, text))``: the viewer's part of one ``Explanation``.

    Effects are of ``ex.default_quantity`` (the expected action for token models, the regression head's action
    otherwise), for the first action of a chunk; attention is averaged over the read positions."""
    quantity = ex.default_quantity
    attention = np.stack([np.stack([ex.attention.patches(head, view=v) for v in range(ex.attention.n_views)])
                          for head in ex.heads])  # (n_heads, n_views, grid, grid)
    base = ex.base
    return ExplainedStep(step=step, action=ex.action[0], effects=ex.parts[quantity].heads[:, 0, :], attention=attention,
                         base_action=None if base is None else base.action[0],
                         delta=None if base is None else base.delta[quantity].heads[:, 0, :])


@dataclass(frozen=True, eq=False)
class ExplainedRollout:
    """One closed-loop episode with its explained steps: the viewer's whole input."""

    task: str  # "lift/base"
    seed: int
    instruction: str
    success: bool
    policy: str  # the policy that ran (a name or path, shown in the header)
    heads: tuple[str, ...]  # every LLM head ("llm.L0H0", ...), the rows of each step's effects
    action_names: tuple[str, ...]  # (A,)
    views: tuple[str, ...]  # camera names, in the order of frames' second axis
    frames: np.ndarray  # (T + 1, n_views, H, W, 3) uint8: the observation before each action, then the last one
    actions: np.ndarray  # (T, A) the executed actions
    steps: tuple[ExplainedStep, ...]  # the explained steps, ascending, the first at step 0
    quantity: str = "expected"  # what the effects are of: "expected" (token models) or "action" (regression head)
    base: str | None = None  # the base policy an adapter is compared with (steps then carry base_action, delta)
    highlight: tuple[str, ...] = ()  # LLM heads to star: a heads adapter's or a mask's
    highlight_label: str = "adapter heads"  # what the starred heads are, in words
    head: str | None = None  # the head whose attention is shown first (None: each step's top head)
    top: int = 10  # heads listed per step
    every: int = 1  # explained every k-th control step
    horizon: int | None = None  # the episode's step limit, when known

    def __post_init__(self) -> None:
        for name in ("heads", "highlight", "action_names", "views"):
            object.__setattr__(self, name, tuple(map(str, getattr(self, name))))
        frames = np.asarray(self.frames)
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1] != len(self.views) or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (T + 1, {len(self.views)} views, H, W, 3), got {frames.dtype} "
                             f"{frames.shape}")
        object.__setattr__(self, "frames", _array(frames, np.uint8, "frames"))
        actions = _array(self.actions, np.float64, "actions")
        if actions.shape != (frames.shape[0] - 1, len(self.action_names)):
            raise ValueError(f"actions must be (T, A) = ({frames.shape[0] - 1}, {len(self.action_names)}) for "
                             f"{frames.shape[0]} frames, got {actions.shape}")
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.quantity not in UNITS:
            raise ValueError(f"quantity must be one of {sorted(UNITS)}, got {self.quantity!r}")
        self._check_steps()
        for name, heads in (("highlight", self.highlight), ("head", () if self.head is None else (self.head,))):
            unknown = [h for h in heads if h not in self.heads]
            if unknown:
                raise ValueError(f"{name}: no LLM head {unknown[0]!r} in this model (heads are "
                                 f"{self.heads[0]} .. {self.heads[-1]})")
        if self.top < 1 or self.every < 1:
            raise ValueError("top and every must be >= 1")

    def _check_steps(self) -> None:
        numbers = [s.step for s in self.steps]
        if not numbers or numbers[0] != 0 or numbers != sorted(set(numbers)) or numbers[-1] >= len(self.actions):
            raise ValueError(f"steps must be explained control steps, ascending, starting at 0 and below "
                             f"{len(self.actions)}; got {numbers[:5]}")
        shape = (len(self.heads), len(self.views)) + self.steps[0].attention.shape[2:]
        for s in self.steps:
            if s.effects.shape != (len(self.heads), len(self.action_names)) or s.attention.shape != shape or \
                    (s.base_action is None) != (self.base is None):
                raise ValueError(f"step {s.step}: expected effects {(len(self.heads), len(self.action_names))}, "
                                 f"attention {shape} and base_action exactly when base is given; got "
                                 f"{s.effects.shape}, {s.attention.shape}, base_action {s.base_action is not None}")

    @property
    def length(self) -> int:
        """Control steps taken."""
        return len(self.actions)

    def top_heads(self, index: int) -> list[tuple[str, float]]:
        """``[(head, summed |effect|), ...]``: the ``top`` heads of ``steps[index]`` by their summed |direct effect|
        over the action dims, largest first (ties in head order)."""
        score = np.abs(self.steps[index].effects).sum(1)
        return [(self.heads[i], float(score[i])) for i in np.argsort(-score, kind="stable")[:self.top]]

    def explained_index(self) -> list[int]:
        """For each frame (0 .. T), the index into ``steps`` of the last explained step at or before it."""
        numbers = [s.step for s in self.steps]
        return [int(np.searchsorted(numbers, t, side="right")) - 1 for t in range(len(self.frames))]


def episode_json(r: ExplainedRollout) -> dict:
    """The ``explain.json`` of a rollout: settings, success, every executed action, each explained step's top heads."""
    names = r.action_names
    named = lambda values: dict(zip(names, map(float, values)))  # noqa: E731
    steps = [{"step": s.step, "action": named(s.action),
              **({} if s.base_action is None else {"base_action": named(s.base_action)}),
              "top": [{"head": h, "score": v, "effect": named(s.effects[r.heads.index(h)])} for h, v in r.top_heads(i)]}
             for i, s in enumerate(r.steps)]
    return {"format": FORMAT, "version": FORMAT_VERSION, "task": r.task, "seed": r.seed, "instruction": r.instruction,
            "success": r.success, "length": r.length, "horizon": r.horizon, "policy": r.policy, "base": r.base,
            "views": list(r.views), "every": r.every, "quantity": r.quantity, "unit": UNITS[r.quantity],
            "ranking": "sum over the action dims of |direct effect|", "highlight": list(r.highlight),
            "highlight_label": r.highlight_label, "action_names": list(names),
            "actions": [list(map(float, a)) for a in r.actions], "steps": steps}


def _png(frame: np.ndarray) -> str:
    """A data URI of one (H, W, 3) uint8 frame (the page draws it pixelated, so patches stay sharp)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _b64(array: np.ndarray) -> str:  # decoded by the page's bytes()
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _attention(r: ExplainedRollout) -> dict:
    """Every step's attention maps as uint8 (each map scaled by its own maximum) plus the maxima and view masses."""
    maps = np.stack([s.attention for s in r.steps])  # (E, n_heads, n_views, g, g)
    peak = maps.max(axis=(3, 4))  # (E, n_heads, n_views)
    quantised = np.rint(255 * maps / np.maximum(peak, 1e-12)[..., None, None]).astype(np.uint8)
    mass = np.round(maps.sum(axis=(3, 4)), 6)  # (E, n_heads, n_views): the share of the head's attention on each view
    return {"q": _b64(quantised), "max": np.round(peak, 6).tolist(), "mass": mass.tolist()}


def _frame_figure(r: ExplainedRollout, sources: list[str]) -> dict:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    height, width = r.frames.shape[2:4]
    grid = r.steps[0].attention.shape[-1]
    fig = make_subplots(rows=1, cols=len(r.views), subplot_titles=list(r.views), horizontal_spacing=0.03)
    for v in range(len(r.views)):
        # x0 = y0 = 0.5: pixel centres, so the image spans [0, width] x [0, height] like the patch cells
        fig.add_trace(go.Image(source=sources[v], x0=0.5, y0=0.5, hoverinfo="skip", name=r.views[v]), 1, v + 1)
        fig.add_trace(go.Heatmap(z=np.zeros((grid, grid)).tolist(), x0=width / grid / 2, dx=width / grid,
                                 y0=height / grid / 2, dy=height / grid, zmin=0.0, zmax=1.0, colorscale=_OVERLAY,
                                 showscale=v == 0, name=r.views[v], hovertemplate="attention %{z:.2%}<extra></extra>",
                                 colorbar=dict(title=dict(text="attention<br>(clear = more)"), len=0.8,
                                               thickness=12, tickformat=".2%")), 1, v + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, range=[0, width])
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, range=[height, 0])
    for v in range(len(r.views)):
        fig.layout[f"yaxis{v + 1 if v else ''}"].scaleanchor = f"x{v + 1 if v else ''}"
    fig.update_layout(template="plotly_white", margin=dict(l=10, r=10, t=80, b=10), height=520,
                      title=dict(text="attention", font=dict(size=13)))
    return json.loads(fig.to_json())


def _actions_figure(r: ExplainedRollout) -> dict:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    steps = list(range(r.length))
    explained = [s.step for s in r.steps]
    fig = make_subplots(rows=len(r.action_names), cols=1, shared_xaxes=True, vertical_spacing=0.012)
    for d, name in enumerate(r.action_names):
        fig.add_trace(go.Scatter(x=steps, y=r.actions[:, d].tolist(), mode="lines+markers", marker=dict(size=3),
                                 line=dict(color=_COLORS[0], width=1.5), name="steered" if r.base else "policy",
                                 legendgroup="run", showlegend=d == 0,
                                 hovertemplate=f"step %{{x}}<br>{name} %{{y:.4f}}<extra>executed</extra>"), d + 1, 1)
        if r.base is not None:
            fig.add_trace(go.Scatter(x=explained, y=[float(s.base_action[d]) for s in r.steps], mode="lines+markers",
                                     marker=dict(size=3), line=dict(color=_COLORS[1], width=1.5, dash="dash"),
                                     name="base (same observation)", legendgroup="base", showlegend=d == 0,
                                     hovertemplate=f"step %{{x}}<br>{name} %{{y:.4f}}<extra>base</extra>"), d + 1, 1)
        fig.update_yaxes(title_text=name, title_standoff=2, row=d + 1, col=1, tickfont=dict(size=9))
    fig.update_xaxes(title_text="control step", row=len(r.action_names), col=1)
    fig.update_layout(template="plotly_white", height=760, margin=dict(l=60, r=10, t=60, b=40),
                      title=dict(text=f"actions over the episode ({UNITS[r.quantity]})", font=dict(size=13)),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"), hovermode="x",
                      shapes=[dict(type="line", xref="x", yref="paper", x0=0, x1=0, y0=0, y1=1,
                                   line=dict(color="black", width=1.5, dash="dot"))])
    return json.loads(fig.to_json())


def _top_layout(r: ExplainedRollout) -> dict:
    return {"barmode": "relative", "height": 520, "margin": {"l": 110, "r": 10, "t": 80, "b": 100},
            "xaxis": {"title": {"text": f"direct effect ({UNITS[r.quantity]})"}, "zeroline": True,
                      "zerolinecolor": "#444", "gridcolor": "#eee"},
            "yaxis": {"autorange": "reversed", "type": "category"}, "plot_bgcolor": "white",
            "legend": {"orientation": "h", "y": -0.16, "yanchor": "top", "font": {"size": 10}},
            "title": {"text": "top heads", "font": {"size": 13}}}


def viewer_data(r: ExplainedRollout) -> dict:
    """Everything the page's script reads (embedded as JSON; ``build_viewer`` writes it)."""
    frames = [[_png(view) for view in frame] for frame in r.frames]
    steps = [{"step": s.step, "top": [h for h, _ in r.top_heads(i)], "action": s.action.tolist(),
              "base_action": None if s.base_action is None else s.base_action.tolist()} for i, s in enumerate(r.steps)]
    effects = np.stack([s.effects for s in r.steps]).astype("<f4")  # (E, n_heads, A)
    delta = None if r.base is None else _b64(np.stack([s.delta for s in r.steps]).astype("<f4"))
    return {"task": r.task, "seed": r.seed, "instruction": r.instruction, "success": r.success, "length": r.length,
            "heads": list(r.heads), "action_names": list(r.action_names), "views": list(r.views),
            "grid": int(r.steps[0].attention.shape[-1]), "top": r.top, "every": r.every, "quantity": r.quantity,
            "what": WHAT[r.quantity], "unit": UNITS[r.quantity], "base": r.base, "highlight": list(r.highlight),
            "head": r.head, "colors": list(_COLORS), "frames": frames, "actions": r.actions.tolist(), "steps": steps,
            "explained_index": r.explained_index(), "effects": _b64(effects), "delta": delta,
            "attention": _attention(r),
            "figures": {"frame": _frame_figure(r, frames[0]), "actions": _actions_figure(r),
                        "top": {"data": [], "layout": _top_layout(r)}}}


def _header(r: ExplainedRollout) -> str:
    e = html.escape
    outcome = (f'<span class="badge ok">success at step {r.length}</span>' if r.success else
               f'<span class="badge fail">failure: not solved in {r.length} steps</span>')
    every = "every control step" if r.every == 1 else f"every {r.every} control steps"
    lines = [f"policy: <code>{e(r.policy)}</code>", f"camera{'s' if len(r.views) > 1 else ''}: {e(', '.join(r.views))}",
             f"explained {every}", f"direct effects on {e(WHAT[r.quantity])} ({e(UNITS[r.quantity])})"]
    if r.base is not None:
        lines.append(f"steered (with the adapter) vs base <code>{e(r.base)}</code>, each on the same observation")
    if r.highlight:
        lines.append(f"★ = {e(r.highlight_label)}: {e(', '.join(r.highlight))}")
    return (f"<h1>{e(r.task)} · seed {r.seed} {outcome}</h1>\n<p class=\"instruction\">“{e(r.instruction)}”</p>\n"
            f"<p class=\"meta\">{' · '.join(lines)}</p>")


def _controls(r: ExplainedRollout) -> str:
    e = html.escape
    star = set(r.highlight)
    heads = "".join(f'<option value="{e(h)}"{" selected" if h == r.head else ""}>{"★ " if h in star else ""}{e(h)}'
                    "</option>" for h in r.heads)
    dims = "".join(f'<option value="{d}">|effect| on {e(n)}</option>' for d, n in enumerate(r.action_names))
    quantity = ('<label>show <select id="quantity"><option value="effect">direct effect (steered)</option>'
                '<option value="delta">change vs base (steered − base)</option></select></label>'
                if r.base is not None else "")
    return (f'<label>step <input type="range" id="step" min="0" max="{r.length}" step="1" value="0"></label>'
            '<output id="step-label"></output><button id="play" type="button">▶ play</button>'
            f'<label>head <select id="head"><option value="auto">top head of each step</option>{heads}</select></label>'
            '<label>overlay <input type="range" id="opacity" min="0" max="1" step="0.05" value="1"></label>'
            f'<label>rank by <select id="rank"><option value="all">sum of |effect| over dims</option>{dims}</select>'
            f"</label>{quantity}")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0 16px;color:#222;background:#fafafa}h1{font-size:20px;margin:12px 0 4px}
.instruction{font-size:17px;margin:2px 0}.meta{color:#555;font-size:13px;margin:2px 0}.ok{background:#2a9d4a}
.badge{font-size:14px;padding:2px 8px;border-radius:10px;color:white;vertical-align:middle;margin-left:8px}.fail{background:#c0392b}
#controls{display:flex;flex-wrap:wrap;gap:16px;align-items:center;margin:8px 0;font-size:14px}
#step{width:300px;vertical-align:middle}#step-label{min-width:150px;font-variant-numeric:tabular-nums}
#action-label{font-family:ui-monospace,monospace;white-space:pre-wrap;min-height:1.2em}
main{display:grid;grid-template-columns:minmax(300px,420px) minmax(300px,460px) minmax(360px,1fr);gap:8px}
.plot{background:white;border:1px solid #ddd;border-radius:4px}
footer{color:#888;font-size:12px;margin:8px 0}
"""


def build_viewer(r: ExplainedRollout) -> str:
    """``build_viewer(rollout)`` -> the viewer page: one self-contained HTML string (plotly.js inlined once)."""
    from plotly.offline import get_plotlyjs

    data = json.dumps(viewer_data(r), allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>robosteer explain · {html.escape(r.task)} · seed {r.seed}</title>
<script>window.__errors=[];window.onerror=function(m,s,l,c){{window.__errors.push(String(m)+" (line "+l+":"+c+")");}};
window.addEventListener("unhandledrejection",function(e){{window.__errors.push("unhandled rejection: "+e.reason);}});</script>
<style>{_STYLE}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<header>{_header(r)}</header>
<section id="controls">{_controls(r)}</section><p id="action-label" class="meta"></p>
<main><div id="frame-plot" class="plot"></div><div id="top-plot" class="plot"></div><div id="action-plot" class="plot"></div></main>
<footer>robosteer explain: each head's direct effect, read as in docs/explain.md; the data are in explain.json.
Click a bar to show that head's attention.</footer>
<script type="application/json" id="viewer-data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


_SCRIPT = r"""
(function () {
"use strict";
var D = JSON.parse(document.getElementById("viewer-data").textContent);
function bytes(b64) { var s = atob(b64), a = new Uint8Array(s.length); for (var i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return a; }
var nH = D.heads.length, nV = D.views.length, g = D.grid, A = D.action_names.length, T = D.length;
var att = bytes(D.attention.q), eff = new Float32Array(bytes(D.effects).buffer);
var del = D.delta ? new Float32Array(bytes(D.delta).buffer) : null, star = new Set(D.highlight);
var $ = function (id) { return document.getElementById(id); };
var frameDiv = $("frame-plot"), topDiv = $("top-plot"), actionDiv = $("action-plot"), slider = $("step");
var state = {step: 0, head: D.head || "auto", rank: "all", quantity: "effect"};
var opts = {displaylogo: false, responsive: true};

function value(e, h, d, q) { var a = q === "delta" ? del : eff; return a[(e * nH + h) * A + d]; }
function ranking(e) {  // head indices, largest |effect| first (the step's own list for the default ranking)
  if (state.rank === "all" && state.quantity === "effect") return D.steps[e].top.map(function (h) { return D.heads.indexOf(h); });
  var score = [], idx = [];
  for (var h = 0, s = 0; h < nH; h++, s = 0) {
    for (var d = 0; d < A; d++) if (state.rank === "all" || +state.rank === d) s += Math.abs(value(e, h, d, state.quantity));
    score.push(s); idx.push(h);
  }
  idx.sort(function (a, b) { return score[b] - score[a] || a - b; });
  return idx.slice(0, D.top);
}
function shownHead(e) { return state.head === "auto" ? ranking(e)[0] : D.heads.indexOf(state.head); }
function attention(e, h, v) {
  var off = ((e * nH + h) * nV + v) * g * g, peak = D.attention.max[e][h][v], rows = [];
  for (var r = 0; r < g; r++) { var row = []; for (var c = 0; c < g; c++) row.push(att[off + r * g + c] / 255 * peak); rows.push(row); }
  return rows;
}
function label(h) { var n = D.heads[h]; return star.has(n) ? "★ " + n : n; }

function drawFrame(e, h) {
  var img = [], heat = [], src = [], z = [], zmax = [], mass = [], top = Math.max.apply(null, D.attention.max[e][h]);
  for (var v = 0; v < nV; v++) {  // one colour scale for every view (the colour bar's)
    img.push(2 * v); heat.push(2 * v + 1); src.push(D.frames[state.step][v]);
    z.push(attention(e, h, v)); zmax.push(Math.max(top, 1e-9));
    mass.push(D.views[v] + " " + (100 * D.attention.mass[e][h][v]).toFixed(1) + "%");
  }
  var at = D.steps[e].step, when = at === state.step ? "step " + at : "explained at step " + at;
  var title = "attention of <b>" + label(h) + "</b> from the action positions (" + when +
    ")<br><sup>share of the head's attention on each view: " + mass.join(", ") + "</sup>";
  return Plotly.restyle(frameDiv, {source: src}, img).then(function () {
    return Plotly.restyle(frameDiv, {z: z, zmax: zmax}, heat);
  }).then(function () { return Plotly.relayout(frameDiv, {"title.text": title}); });
}
function drawTop(e, h) {
  var order = ranking(e), y = order.map(function (i) { return D.heads[i]; }), traces = [];
  for (var d = 0; d < A; d++) {
    if (state.rank !== "all" && +state.rank !== d) continue;
    traces.push({type: "bar", orientation: "h", name: D.action_names[d], y: y, customdata: y,
      x: order.map(function (i) { return value(e, i, d, state.quantity); }),
      marker: {color: D.colors[d % D.colors.length], line: {color: "#000",
        width: order.map(function (i) { return i === h ? 2 : 0; })}},
      hovertemplate: "%{y}<br>" + D.action_names[d] + ": %{x:.4g} " + D.unit + "<extra></extra>"});
  }
  var layout = JSON.parse(JSON.stringify(D.figures.top.layout));
  var what = state.quantity === "delta" ? "change vs base of the direct effect" : "direct effect";
  layout.yaxis.tickvals = y; layout.yaxis.ticktext = order.map(function (i) {
    var t = (i === h ? "▶ " : "") + label(i); return star.has(D.heads[i]) ? "<b style='color:#c0392b'>" + t + "</b>" : t; });
  layout.title.text = "top " + order.length + " heads by " + (state.rank === "all" ? "summed |" + what + "| over the dims" :
    "|" + what + "| on " + D.action_names[+state.rank]) + " (step " + D.steps[e].step + ")<br><sup>" + what + " on " + D.what + "</sup>";
  layout.xaxis.title.text = what + " (" + D.unit + ")";
  return Plotly.react(topDiv, traces, layout, opts);
}
function draw() {
  var e = D.explained_index[state.step], h = shownHead(e);
  var end = state.step === T ? " (after the last action)" : "";
  $("step-label").textContent = "step " + state.step + " of " + T + end;
  var act = D.actions[state.step], base = D.steps[e].step === state.step && D.steps[e].base_action;
  function fmt(a) { return a.map(function (x, d) { return D.action_names[d] + " " + (x < 0 ? "" : "+") + x.toFixed(3); }).join("  "); }
  $("action-label").textContent = act ? "executed action: " + fmt(act) + (base ? "  ·  base: " + fmt(base) : "") : "";
  return Promise.all([drawFrame(e, h), drawTop(e, h),
    Plotly.relayout(actionDiv, {"shapes[0].x0": state.step, "shapes[0].x1": state.step})]);
}

var pending = Promise.resolve();
function failed(err) { window.__errors.push("draw failed: " + (err && err.stack || err)); }
function update() { pending = pending.catch(function () {}).then(draw); pending.catch(failed); return pending; }
slider.addEventListener("input", function () { state.step = +slider.value; update(); });
$("head").addEventListener("change", function (ev) { state.head = ev.target.value; update(); });
$("rank").addEventListener("change", function (ev) { state.rank = ev.target.value; update(); });
$("opacity").addEventListener("input", function (ev) {
  Plotly.restyle(frameDiv, {opacity: +ev.target.value}, D.views.map(function (_, v) { return 2 * v + 1; })); });
if ($("quantity")) $("quantity").addEventListener("change", function (ev) { state.quantity = ev.target.value; update(); });
var timer = null;
$("play").addEventListener("click", function () {
  if (timer) { clearInterval(timer); timer = null; $("play").textContent = "▶ play"; return; }
  $("play").textContent = "❚❚ pause";
  timer = setInterval(function () { state.step = state.step >= T ? 0 : state.step + 1; slider.value = state.step; update(); }, 200);
});

var params = {};
location.hash.slice(1).split("&").forEach(function (p) {  // #step=12&head=llm.L3H1, #selftest
  var kv = p.split("="); if (kv[0]) params[kv[0]] = kv.length > 1 ? decodeURIComponent(kv[1]) : true; });
if (params.step !== undefined) state.step = Math.max(0, Math.min(T, parseInt(params.step, 10) || 0));
if (params.head && D.heads.indexOf(params.head) >= 0) state.head = params.head;
slider.value = state.step; $("head").value = state.head;

var F = D.figures;
pending = Promise.all([Plotly.newPlot(frameDiv, F.frame.data, F.frame.layout, opts),
  Plotly.newPlot(actionDiv, F.actions.data, F.actions.layout, opts),
  Plotly.newPlot(topDiv, [], F.top.layout, opts)]).then(draw).then(function () {
    topDiv.on("plotly_click", function (ev) {
      var name = ev.points[0].customdata; state.head = name; $("head").value = name; update(); });
  });
pending.catch(failed);
if (params.selftest) pending.then(selftest, report);

function drawn(layer) {  // the href of every drawn frame ("im") or attention overlay ("hm")
  return Array.prototype.map.call(frameDiv.querySelectorAll("g." + layer + " image"), function (im) {
    return im.getAttribute("href") || im.getAttribute("xlink:href") || ""; }).join("|"); }
function fnv(s) {  // FNV-1a, 32 bits
  for (var x = 0x811c9dc5, i = 0; i < s.length; i++) x = Math.imul(x ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return x.toString(16); }
function settle() { return new Promise(function (r) { setTimeout(r, 300); }); }
function report(out) {
  if (out instanceof Error || typeof out !== "object") { out = {failure: String(out && out.stack || out)}; failed(out.failure); }
  out.errors = window.__errors.slice();
  var pre = document.createElement("pre"); pre.id = "selftest-result"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}
function selftest() {
  var out = {start: state.step};
  return settle().then(function () {
    out.before = fnv(drawn("im")); out.overlay_before = fnv(drawn("hm")); out.images = frameDiv.querySelectorAll("g.im image").length;
    out.target = state.step === T ? 0 : T;
    slider.value = out.target; slider.dispatchEvent(new Event("input"));
    return pending;
  }).then(settle).then(function () {
    out.after = fnv(drawn("im")); out.overlay_after = fnv(drawn("hm")); out.step = state.step; out.marker = actionDiv.layout.shapes[0].x0;
    out.bars = topDiv.data.length ? topDiv.data[0].y.length : 0; out.label = $("step-label").textContent; report(out);
  }).catch(report);
}
})();
"""

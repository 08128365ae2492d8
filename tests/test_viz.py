"""Plotly head-maps: one heatmap per tower, titles that say what a score means, hover text, mask outlines,
sequential or diverging colours, HTML pages sharing one plotly.js (or self-contained)."""

from __future__ import annotations

import re
import shutil
import struct
import sys

import numpy as np
import pytest

pytest.importorskip("plotly")

from robosteer.circuits.scores import HeadScores  # noqa: E402
from robosteer.masks import HeadMask  # noqa: E402
from robosteer.sites import HeadLayout  # noqa: E402
from robosteer.viz import compare_maps, head_map, notebook_renderer, save_html  # noqa: E402

LAYOUT = HeadLayout({"llm": (4, 6), "dino": (3, 2)})


def scores() -> HeadScores:
    heads = LAYOUT.heads()
    rng = np.random.default_rng(0)
    return HeadScores(heads, {"knn": rng.random(len(heads)), "err": rng.random(len(heads))},
                      {"knn": True, "err": False}, layout=LAYOUT, method="knn")


def heatmaps(fig):
    return [t for t in fig.data if t.type == "heatmap"]


def outline_cells(trace):
    """(layer, head) of each closed square of an outline trace (x, y runs separated by None)."""
    cells, xs, ys = set(), [], []
    for x, y in zip(trace.x, trace.y):
        if x is None:
            cells.add((round(float(np.mean(ys[:4]))), round(float(np.mean(xs[:4])))))
            xs, ys = [], []
        else:
            xs.append(x)
            ys.append(y)
    return cells


def test_head_map_has_one_heatmap_per_tower_with_hover_and_mask():
    s = scores()
    mask = HeadMask.select(s, k=5)
    fig = head_map(s, "knn", mask=mask)
    maps = heatmaps(fig)
    assert [np.shape(t.z) for t in maps] == [(4, 6), (3, 2)]
    np.testing.assert_array_equal(np.asarray(maps[1].z, dtype=float), s.grid("dino", "knn"))
    text = np.asarray(maps[0].text)
    assert text[2, 5].startswith("llm.L2H5<br>knn = ")
    best = s.top(1)[0]
    grid_text = np.asarray(maps[0 if best.tower == "llm" else 1].text)
    assert "rank 1 of 30" in grid_text[best.layer, best.head]


def test_selected_heads_are_cell_outlines_on_a_halo_and_hover_shows_their_score_and_rank():
    s = scores()
    mask = HeadMask.select(s, k=5)
    fig = head_map(s, "knn", mask=mask)
    outlines = [t for t in fig.data if t.type == "scatter"]
    # per tower: a wide white halo first (underneath), then a narrower dark line on top; both square outlines
    assert all(t.mode == "lines" for t in outlines)
    for tower in {h.tower for h in mask.heads}:
        halo, line = [t for t in outlines if t.name.endswith(f" · {tower}")]
        assert halo.line.color == "white" and halo.line.width > line.line.width >= 2
        assert line.line.color not in ("white", None)
        assert outline_cells(halo) == outline_cells(line)
    drawn = {(t.name.split(" · ")[1], *cell) for t in outlines for cell in outline_cells(t)}
    assert drawn == {(h.tower, h.layer, h.head) for h in mask.heads}
    # the outlines take no hover: the cell's own hover (name, score, rank, selected) shows through
    assert all(t.hoverinfo == "skip" for t in outlines)
    by_tower = {t.name.split(" · ")[1]: np.asarray(t.text) for t in heatmaps(fig)}
    ranks = dict(zip(map(str, s.heads), s.rank("knn")))
    for h in mask.heads:
        hover = by_tower[h.tower][h.layer, h.head]
        assert hover.startswith(f"{h}<br>knn = ") and f"rank {ranks[str(h)]} of 30" in hover and "selected" in hover
    unselected = next(h for h in s.heads if h not in set(mask.heads))
    assert "selected" not in by_tower[unselected.tower][unselected.layer, unselected.head]


def test_the_default_title_says_what_the_score_means_and_where_it_came_from(tmp_path):
    s = scores()
    fig = head_map(s, "knn", mask=HeadMask.select(s, k=3))
    title = fig.layout.title.text
    assert "(knn)" not in title and "knn head scores" not in title  # it used to repeat the method's name
    assert title.startswith("kNN regression score")
    assert "higher = the head's activations predict the action better" in title
    assert "outlined: the 3 selected heads" in title
    bar = fig.layout.coloraxis.colorbar.title.text
    assert bar != "knn" and "higher = better" in bar
    assert "lower = better" in head_map(s, "err").layout.coloraxis.colorbar.title.text
    # what a scorer records (data, fingerprint, and a task and policy in meta) reaches the subtitle, also after a
    # save and load; files written without them keep loading and plotting
    recorded = HeadScores(s.heads, dict(s.columns), dict(s.higher_is_better), layout=LAYOUT, method="knn",
                          fingerprint="0123456789abcdef", data="300 frames from 20 episodes, leave-one-episode-out",
                          meta={"task": "push/paraphrase", "policy": "default"})
    again = HeadScores.load(recorded.save(tmp_path / "knn.csv"))
    subtitle = head_map(again, "knn").layout.title.text.split("<br>")[1]
    for part in ("task push/paraphrase", "policy default (model 0123456789)", "300 frames from 20 episodes"):
        assert part in subtitle
    assert head_map(s, "knn", title="mine", subtitle="").layout.title.text == "mine"
    # merged scores repeat a data line each scorer of the same probe wrote (activation and attribution): said once
    probe = {"data": "12 probe pairs (visual)", "layout": LAYOUT, "probe": "visual"}
    merged = HeadScores.merge(s, HeadScores(s.heads, {"activation:visual": s.values("knn")}, {"activation:visual": True},
                                            method="activation", **probe),
                              HeadScores(s.heads, {"attribution:visual": s.values("err")}, {"attribution:visual": True},
                                         method="attribution", **probe))
    assert compare_maps(merged, ["knn", "activation:visual"]).layout.title.text.count("12 probe pairs (visual)") == 1
    patching = HeadScores(s.heads, {"attribution:visual": np.linspace(-1, 1, len(s))}, {"attribution:visual": True},
                          layout=LAYOUT, method="attribution", probe="visual")
    title = head_map(patching).layout.title.text
    assert title.startswith("attribution patching score (est. gap recovered, visual probe): higher = ")


@pytest.mark.parametrize("higher", [True, False])
def test_scores_of_both_signs_use_a_diverging_scale_centred_on_zero(higher):
    s = scores()
    signed = HeadScores(s.heads, {"activation:visual": np.linspace(-0.3, 0.9, len(s))}, {"activation:visual": higher},
                        layout=LAYOUT, method="activation")
    axis = head_map(signed).layout.coloraxis
    assert axis.cmid == 0 and axis.cmin == -axis.cmax == pytest.approx(-0.9)
    assert axis.colorscale != head_map(s, "knn").layout.coloraxis.colorscale  # not the sequential scale
    assert (axis.colorscale[-1][1] == head_map(signed.with_columns({}, {"activation:visual": True})).layout
            .coloraxis.colorscale[-1][1]) == higher  # blue marks the important sign either way
    one_sign = head_map(s, "knn").layout.coloraxis
    assert one_sign.cmid is None and one_sign.cmin is None


def test_lower_is_better_column_uses_reversed_scale_and_towers_filter():
    fig = head_map(scores(), "err", towers=["dino"])
    assert len(heatmaps(fig)) == 1 and np.shape(heatmaps(fig)[0].z) == (3, 2)
    assert fig.layout.coloraxis.colorscale != head_map(scores(), "knn").layout.coloraxis.colorscale
    with pytest.raises(ValueError, match="siglip"):
        head_map(scores(), towers=["siglip"])


def test_compare_maps_with_difference():
    s = scores()
    fig = compare_maps(s, ["knn", "err"], difference=True)
    maps = heatmaps(fig)
    assert len(maps) == 6  # 3 rows x 2 towers
    np.testing.assert_allclose(np.asarray(maps[4].z, dtype=float), s.grid("llm", "knn") - s.grid("llm", "err"))
    assert maps[4].coloraxis == "coloraxis3" and fig.layout.coloraxis3.cmid == 0
    assert fig.layout.coloraxis3.cmin == -fig.layout.coloraxis3.cmax
    with pytest.raises(ValueError, match="exactly two"):
        compare_maps(s, ["knn"], difference=True)


def test_compare_maps_rows_leave_room_for_the_axis_title_and_the_next_panels_title():
    fig = compare_maps(scores(), ["knn", "err"], difference=True)
    margin = fig.layout.margin  # plotly's defaults: 100 px above, 80 below
    plot_px = fig.layout.height - (100 if margin.t is None else margin.t) - (80 if margin.b is None else margin.b)
    domains = [fig.layout[f"yaxis{1 + 2 * row}"].domain for row in range(3)]  # first column of each row
    for upper, lower in zip(domains, domains[1:]):
        assert (upper[0] - lower[1]) * plot_px >= 90  # tick labels + "head" + the next row's subplot title
    for row, (low, high) in enumerate(domains, start=1):  # each colour bar spans its own row
        bar = fig.layout[f"coloraxis{row}" if row > 1 else "coloraxis"].colorbar
        assert bar.y == pytest.approx((low + high) / 2) and bar.len == pytest.approx(high - low)


def test_pages_share_one_plotlyjs_beside_them_and_a_self_contained_page_embeds_it(tmp_path):
    import plotly.offline

    bundle = plotly.offline.get_plotlyjs()
    first = save_html(head_map(scores(), mask=HeadMask.select(scores(), k=3)), tmp_path / "map.html")
    second = save_html(head_map(scores(), "err"), tmp_path / "err.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.html", "map.html", "plotly.min.js"]
    assert (tmp_path / "plotly.min.js").read_text() == bundle
    for page in (first, second):
        html = page.read_text()
        assert bundle not in html and len(html) < 200_000  # was a 4.8 MB copy of plotly.js per page
        assert re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html) == ["plotly.min.js"]  # beside it: opens offline
        assert "llm.L0H0" in html or page is second
    (tmp_path / "plotly.min.js").write_text("/* another plotly version */")
    save_html(head_map(scores()), tmp_path / "map.html")
    assert (tmp_path / "plotly.min.js").read_text() == bundle  # pages must load the plotly their JSON was made for

    alone = save_html(head_map(scores(), mask=HeadMask.select(scores(), k=3)), tmp_path / "one" / "map.html",
                      self_contained=True)
    html = alone.read_text()
    assert bundle in html and list(alone.parent.iterdir()) == [alone]  # one file to send
    assert not re.search(r"<script[^>]*\bsrc=", html)  # nothing is fetched
    # plotly.js itself mentions CDN URLs (default topojson/map styles); outside it there are none.
    assert "cdn." not in html.replace(bundle, "")
    assert "llm.L0H0" in html


def test_the_same_figure_writes_the_same_html(tmp_path):
    # committed figures are regenerated by the docs' commands: a random element id would change them every run
    fig = head_map(scores(), mask=HeadMask.select(scores(), k=3))
    first, second = save_html(fig, tmp_path / "a.html"), save_html(fig, tmp_path / "b.html")
    assert first.read_text() == second.read_text()
    other = save_html(head_map(scores(), mask=HeadMask.select(scores(), k=2)), tmp_path / "c.html")
    ids = [re.search(r'<div id="([^"]+)" class="plotly-graph-div"', p.read_text()).group(1) for p in (first, other)]
    assert ids[0] != ids[1]  # two different figures inlined into one notebook page keep their own elements


PLOTLY_MIME = "application/vnd.plotly.v1+json"


@pytest.fixture
def renderers():
    """plotly's renderer settings, restored after the test (notebook_renderer changes them for the process)."""
    import plotly.io as pio

    default = pio.renderers.default
    yield pio.renderers
    pio.renderers.default = default


def test_notebook_figures_keep_the_plotly_figure_alone_where_kaleido_is_absent(renderers, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # `import kaleido` raises ImportError
    assert notebook_renderer() == "plotly_mimetype" == renderers.default
    assert "kaleido is not installed" in caplog.text
    assert set(head_map(scores())._repr_mimebundle_()) == {PLOTLY_MIME}  # and no 4.8 MB plotly.js in text/html
    caplog.clear()
    assert notebook_renderer(static=False) == "plotly_mimetype" and not caplog.text  # asked for none: no warning


def test_notebook_figures_carry_a_png_beside_the_plotly_figure_where_kaleido_renders(renderers):
    pytest.importorskip("kaleido")
    if not (shutil.which("chromium") or shutil.which("google-chrome") or shutil.which("chrome")):
        pytest.skip("no Chrome or Chromium for kaleido")
    assert notebook_renderer(width=900) == "plotly_mimetype+robosteer_png" == renderers.default
    bundle = head_map(scores())._repr_mimebundle_()
    assert set(bundle) == {PLOTLY_MIME, "image/png"}  # one output: interactive in Jupyter, the PNG elsewhere
    import base64

    png = base64.b64decode(bundle["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (900, head_map(scores()).layout.height)


def test_a_figure_kaleido_fails_to_draw_keeps_the_plotly_figure_and_says_why(renderers, monkeypatch, caplog):
    import robosteer.viz as viz

    class Broken:
        def png(self, fig_dict, width=None, height=None):
            raise RuntimeError("ReferenceError: kaleido_scopes is not defined")

    monkeypatch.setattr(viz, "_static_images_unavailable", lambda: None)  # as if kaleido worked here
    monkeypatch.setattr(viz, "_BROWSER", Broken())
    assert notebook_renderer() == "plotly_mimetype+robosteer_png"
    assert set(head_map(scores())._repr_mimebundle_()) == {PLOTLY_MIME}  # the interactive figure, and the cell runs on
    assert "kaleido_scopes is not defined" in caplog.text


def test_kaleido_calls_that_fail_are_retried_at_the_figures_size():
    import asyncio

    import robosteer.viz as viz

    class Flaky:  # kaleido reading its page before it has loaded, twice
        def __init__(self):
            self.calls = []

        async def calc_fig(self, fig, opts):
            self.calls.append(opts)
            if len(self.calls) < viz._PNG_ATTEMPTS:
                raise RuntimeError("ReferenceError: kaleido_scopes is not defined")
            return b"png"

    browser = viz._Kaleido.__new__(viz._Kaleido)  # no browser: the calls run here
    browser._call, browser._kaleido = asyncio.run, Flaky()
    assert browser.png({"data": [], "layout": {"height": 300}}, width=900) == b"png"
    assert browser._kaleido.calls == [dict(format="png", width=900, height=300)] * viz._PNG_ATTEMPTS

    class Dead:
        async def calc_fig(self, fig, opts):
            raise RuntimeError("the browser is gone")

    browser._kaleido = Dead()
    with pytest.raises(RuntimeError, match="the browser is gone"):  # notebook_renderer's figures then log and go on
        browser.png({"data": [], "layout": {}})

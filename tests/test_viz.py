"""Plotly head-maps: one heatmap per tower, hover text, mask outlines, standalone HTML."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("plotly")

from robosteer.circuits.scores import HeadScores  # noqa: E402
from robosteer.masks import HeadMask  # noqa: E402
from robosteer.sites import HeadLayout  # noqa: E402
from robosteer.viz import compare_maps, head_map, save_html  # noqa: E402

LAYOUT = HeadLayout({"llm": (4, 6), "dino": (3, 2)})


def scores() -> HeadScores:
    heads = LAYOUT.heads()
    rng = np.random.default_rng(0)
    return HeadScores(heads, {"knn": rng.random(len(heads)), "err": rng.random(len(heads))},
                      {"knn": True, "err": False}, layout=LAYOUT, method="knn")


def heatmaps(fig):
    return [t for t in fig.data if t.type == "heatmap"]


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
    outlines = [t for t in fig.data if t.type == "scatter"]
    drawn = {(t.name.split(" · ")[1], int(y), int(x)) for t in outlines for x, y in zip(t.x, t.y)}
    assert drawn == {(h.tower, h.layer, h.head) for h in mask.heads}
    assert all(t.marker.symbol == "square-open" for t in outlines)


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


def test_html_is_standalone(tmp_path):
    import plotly.offline

    path = save_html(head_map(scores(), mask=HeadMask.select(scores(), k=3)), tmp_path / "map.html")
    html = path.read_text()
    bundle = plotly.offline.get_plotlyjs()
    assert bundle in html  # plotly.js is embedded
    assert not re.search(r"<script[^>]*\bsrc=", html)  # nothing is fetched
    # plotly.js itself mentions CDN URLs (default topojson/map styles); outside it there are none.
    assert "cdn." not in html.replace(bundle, "")
    assert "llm.L0H0" in html

"""HeadScores: ranking, tables, grids, combination, rank correlation, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from robosteer.circuits.scores import HeadScores
from robosteer.sites import Head, HeadLayout

LAYOUT = HeadLayout({"llm": (2, 2), "dino": (1, 3)})
H = [Head.parse(s) for s in ("llm.L0H0", "llm.L0H1", "llm.L1H0", "llm.L1H1", "dino.L0H2")]


def make() -> HeadScores:
    return HeadScores(
        H,
        {"knn": [0.1, 0.5, np.nan, 0.3, 0.2], "err": [3.0, 1.0, 2.0, 2.0, 5.0]},
        {"knn": True, "err": False},
        layout=LAYOUT, method="knn", probe="visual", fingerprint="abc123", data="5 frames",
        meta={"k_grid": (10, 20)},
    )


def test_top_and_rank_follow_direction():
    s = make()
    assert s.top(2) == [H[1], H[3]]
    assert s.top(None) == [H[1], H[3], H[4], H[0]]  # NaN never listed
    assert s.top(3, "err") == [H[1], H[2], H[3]]  # lower is better; tie broken by head order
    assert s.rank("knn").tolist() == [4, 1, 5, 2, 3]  # NaN ranks last
    assert s.rank("err").tolist() == [4, 1, 2, 2, 5]  # ties share the lowest rank
    assert s["llm.L0H1"] == {"knn": 0.5, "err": 1.0}


def test_to_frame_and_grid():
    s = make()
    frame = s.to_frame()
    assert list(frame.columns) == ["head", "tower", "layer", "head_index", "knn", "err"]
    assert frame["head"].tolist() == [str(h) for h in H]
    assert frame["layer"].tolist() == [0, 0, 1, 1, 0] and frame["head_index"].tolist() == [0, 1, 0, 1, 2]
    grid = s.grid("dino", "err")
    assert grid.shape == (1, 3)
    assert np.isnan(grid[0, :2]).all() and grid[0, 2] == 5.0
    np.testing.assert_array_equal(s.grid("llm"), [[0.1, 0.5], [np.nan, 0.3]])
    with pytest.raises(ValueError, match="towers"):
        s.grid()


def test_combine_zscore_and_rank_by_hand():
    s = HeadScores(H[:3], {"a": [1.0, 2.0, 3.0], "b": [30.0, 10.0, 20.0]}, {"a": True, "b": False})
    z = s.combine(["a", "b"], how="zscore")
    # a -> z = (-1.2247, 0, 1.2247); b oriented = (-30, -10, -20) -> z = (-1.2247, 1.2247, 0)
    np.testing.assert_allclose(z.values("combined:zscore"), [-1.2247448713915890, 0.6123724356957945, 0.6123724356957945])
    assert z.higher_is_better["combined:zscore"] is True
    r = s.combine(how="rank", name="mean_rank")
    np.testing.assert_array_equal(r.values("mean_rank"), [3.0, 1.5, 1.5])  # ranks a: 3,2,1; b: 3,1,2
    assert r.top(1, "mean_rank") == [H[1]]
    assert s.column_names == ["a", "b"]  # combine returns a copy


def test_spearman_by_hand_and_across_objects():
    heads = [Head("llm", 0, i) for i in range(5)]
    s = HeadScores(heads, {"x": [1, 2, 3, 4, 5], "y": [5, 6, 7, 8, 7], "up": [1, 2, 3, 4, 5], "loss": [5, 4, 3, 2, 1]},
                   {"x": True, "y": True, "up": True, "loss": False})
    assert s.spearman("x", "y") == pytest.approx(0.8207826816681233, abs=1e-12)  # scipy.stats.spearmanr
    assert s.spearman("up", "loss") == pytest.approx(1.0)  # lower loss = higher importance: the same ordering
    other = HeadScores(heads[::-1], {"z": [5.0, 4.0, 3.0, 2.0, 1.0]}, {"z": True})  # same values, other order
    assert s.spearman(other, "x") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="constant"):
        HeadScores(heads, {"c": [1.0] * 5, "x": [1, 2, 3, 4, 5]}, {"c": True, "x": True}).spearman("c", "x")


def test_save_load_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    heads = LAYOUT.heads()
    values = rng.standard_normal(len(heads)) * 10.0 ** rng.integers(-300, 300, len(heads))
    values[:4] = [-0.0, np.nan, np.inf, 1 / 3]
    s = HeadScores(heads, {"knn:visual": values, "knn/mse": rng.random(len(heads))},
                   {"knn:visual": True, "knn/mse": False}, layout=LAYOUT, method="knn", probe="visual",
                   fingerprint="f00d", data="synthetic, 7 heads", meta={"k_grid": [10, 20], "nested": {"a": 1.5}})
    path = s.save(tmp_path / "run.csv")
    assert path.exists() and (tmp_path / "run.json").exists()
    loaded = HeadScores.load(path)
    assert loaded == s
    for column in s.columns:
        assert loaded.values(column).tobytes() == s.values(column).tobytes()
    assert math.copysign(1.0, loaded.values("knn:visual")[0]) == -1.0
    assert json.loads((tmp_path / "run.json").read_text())["layout"] == {"llm": [2, 2], "dino": [1, 3]}
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_load_refuses_a_csv_that_does_not_match_its_sidecar(tmp_path):
    path = make().save(tmp_path / "s.csv")
    path.write_text(path.read_text().replace("0.5", "0.6"))
    with pytest.raises(ValueError, match="checksum"):
        HeadScores.load(path)


def test_equality_sees_a_one_ulp_change():
    s = make()
    values = s.values("err").copy()
    values[0] = np.nextafter(values[0], np.inf)
    assert s.with_columns({"err": values}, {}) != s


@pytest.mark.parametrize("kwargs,match", [
    ({"heads": [H[0], H[0]]}, "unique"),
    ({"columns": {"knn": [1.0]}}, r"has \(1,\) values for 2 heads"),
    ({"higher_is_better": {}}, "higher_is_better must name"),
    ({"heads": [H[0], Head("llm", 5, 0)]}, "does not exist"),
    ({"columns": {"layer": [1.0, 2.0]}, "higher_is_better": {"layer": True}}, "bad score column"),
])
def test_validation(kwargs, match):
    base = {"heads": H[:2], "columns": {"knn": [1.0, 2.0]}, "higher_is_better": {"knn": True}, "layout": LAYOUT}
    with pytest.raises(ValueError, match=match):
        HeadScores(**{**base, **kwargs})


def test_merge_joins_columns_over_the_union_of_heads():
    a = HeadScores(H[:2], {"knn:visual": [1.0, 2.0]}, {"knn:visual": True}, layout=LAYOUT, method="knn")
    b = HeadScores(H[1:3], {"knn:linguistic": [3.0, 4.0]}, {"knn:linguistic": True}, layout=LAYOUT, method="knn")
    m = HeadScores.merge(a, b)
    assert m.heads == tuple(H[:3]) and m.method == "knn"
    np.testing.assert_array_equal(m.values("knn:linguistic"), [np.nan, 3.0, 4.0])
    with pytest.raises(ValueError, match="more than one"):
        HeadScores.merge(a, a)
    with pytest.raises(ValueError, match="fingerprints"):
        HeadScores.merge(HeadScores(H[:1], {"x": [1.0]}, {"x": True}, fingerprint="1"),
                         HeadScores(H[:1], {"y": [1.0]}, {"y": True}, fingerprint="2"))

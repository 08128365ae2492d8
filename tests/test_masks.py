"""HeadMask: selection, tensors, set operations, JSON and safetensors files, the random control."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robosteer.circuits.scores import HeadScores
from robosteer.masks import HeadMask
from robosteer.sites import Head, HeadLayout

LAYOUT = HeadLayout({"llm": (3, 4), "dino": (2, 3)})


def scores(higher_is_better=True) -> HeadScores:
    heads = LAYOUT.heads()
    values = np.arange(len(heads), dtype=np.float64)  # llm.L0H0 = 0 ... dino.L1H2 = 17
    return HeadScores(heads, {"s": values if higher_is_better else -values}, {"s": higher_is_better},
                      layout=LAYOUT, method="knn", fingerprint="fp1", data="toy")


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_select_global_top_k(higher_is_better):
    mask = HeadMask.select(scores(higher_is_better), k=3)
    assert [str(h) for h in mask.heads] == ["dino.L1H0", "dino.L1H1", "dino.L1H2"]
    assert mask.column == "s" and mask.method == "knn" and mask.fingerprint == "fp1"
    assert len(mask) == 3 and "dino.L1H2" in mask and Head("llm", 0, 0) not in mask


def test_select_per_tower_threshold_and_towers():
    per = HeadMask.select(scores(), k=2, per_tower=True)
    assert [str(h) for h in per.heads] == ["llm.L2H2", "llm.L2H3", "dino.L1H1", "dino.L1H2"]
    assert per.counts() == {"llm": 2, "dino": 2}
    only_llm = HeadMask.select(scores(), k=2, towers=["llm"])
    assert [str(h) for h in only_llm.heads] == ["llm.L2H2", "llm.L2H3"]
    above = HeadMask.select(scores(), threshold=14.0)
    assert len(above) == 4 and min(above.scores) == 14.0
    below = HeadMask.select(scores(higher_is_better=False), threshold=-14.0)  # lower is better: keep <= -14
    assert below.heads == above.heads
    with pytest.raises(KeyError, match="unknown tower"):
        HeadMask.select(scores(), k=2, towers=["siglip"])


def test_tensors_and_back():
    mask = HeadMask.from_heads(["llm.L1H3", "dino.L0H0", "llm.L0H1"], LAYOUT)
    t = mask.tensors()
    assert t["llm"].shape == (3, 4) and t["llm"].dtype == torch.bool and t["dino"].shape == (2, 3)
    assert t["llm"].sum() == 2 and t["llm"][1, 3] and t["llm"][0, 1] and t["dino"][0, 0]
    assert HeadMask.from_tensors(t, LAYOUT).heads == mask.heads
    assert [str(h) for h in mask.heads] == ["llm.L0H1", "llm.L1H3", "dino.L0H0"]  # layout order


def test_set_operations():
    a = HeadMask.from_heads(["llm.L0H0", "llm.L0H1"], LAYOUT)
    b = HeadMask.from_heads(["llm.L0H1", "dino.L1H2"], LAYOUT)
    assert [str(h) for h in (a | b).heads] == ["llm.L0H0", "llm.L0H1", "dino.L1H2"]
    assert [str(h) for h in (a & b).heads] == ["llm.L0H1"]
    assert [str(h) for h in (a - b).heads] == ["llm.L0H0"]
    other = HeadMask.from_heads(["llm.L0H0"], HeadLayout({"llm": (3, 4)}))
    with pytest.raises(ValueError, match="layout"):
        a | other


def test_json_and_safetensors_round_trip(tmp_path):
    mask = HeadMask.select(scores(), k=5, per_tower=True)
    assert HeadMask.from_json(mask.to_json(tmp_path / "m.json"), layout=LAYOUT) == mask
    assert HeadMask.load_safetensors(mask.save_safetensors(tmp_path / "m.safetensors"), layout=LAYOUT) == mask
    fields = json.loads((tmp_path / "m.json").read_text())
    assert fields["format"] == "robosteer.head_mask" and fields["version"] == 1
    assert fields["heads"][0] == "llm.L1H3" and fields["layout"] == {"llm": [3, 4], "dino": [2, 3]}
    from safetensors.torch import load_file

    raw = load_file(tmp_path / "m.safetensors")
    assert set(raw) == {"llm", "dino"} and raw["llm"].dtype == torch.bool and int(raw["llm"].sum()) == 5
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("fmt", ["json", "safetensors"])
def test_loading_onto_another_layout_names_both(tmp_path, fmt):
    mask = HeadMask.from_heads(["llm.L0H0"], LAYOUT)
    path = mask.to_json(tmp_path / "m.json") if fmt == "json" else mask.save_safetensors(tmp_path / "m.st")
    other = HeadLayout({"llm": (32, 32)})
    load = HeadMask.from_json if fmt == "json" else HeadMask.load_safetensors
    with pytest.raises(ValueError) as err:
        load(path, layout=other)
    assert "{'llm': [3, 4], 'dino': [2, 3]}" in str(err.value) and "{'llm': [32, 32]}" in str(err.value)


def test_safetensors_tensor_and_metadata_must_agree(tmp_path):
    from safetensors.torch import save_file

    mask = HeadMask.from_heads(["llm.L0H0"], LAYOUT)
    metadata = {k: json.dumps(v) for k, v in mask._fields().items()}
    tensors = HeadMask.from_heads(["llm.L0H1"], LAYOUT).tensors()
    save_file(tensors, tmp_path / "bad.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match="disagree"):
        HeadMask.load_safetensors(tmp_path / "bad.safetensors")


def test_random_like_keeps_counts_and_is_seeded():
    mask = HeadMask.select(scores(), k=3, per_tower=True)
    r0, r0_again, r1 = (HeadMask.random_like(mask, seed) for seed in (0, 0, 1))
    assert r0.counts() == mask.counts() == r1.counts()
    assert r0 == r0_again
    assert r0.heads != mask.heads and r0.heads != r1.heads
    assert r0.method == "random"


def test_invalid_heads_are_refused():
    with pytest.raises(ValueError, match="does not exist"):
        HeadMask.from_heads(["llm.L3H0"], LAYOUT)
    with pytest.raises(ValueError, match="twice"):
        HeadMask.from_heads(["llm.L0H0", "llm.L0H0"], LAYOUT)


def test_json_files_keep_their_bytes_through_write_json_atomic(tmp_path):
    """``write_json_atomic`` writes what each caller wrote by hand: indent 2, a final newline unless newline=False."""
    from robosteer.files import read_json, write_json_atomic

    obj = {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}
    assert write_json_atomic(tmp_path / "a.json", obj).read_text() == json.dumps(obj, indent=2) + "\n"
    assert (write_json_atomic(tmp_path / "b.json", obj, newline=False).read_text() == json.dumps(obj, indent=2))
    assert (write_json_atomic(tmp_path / "c.json", obj, sort_keys=True).read_text()
            == json.dumps(obj, indent=2, sort_keys=True) + "\n")
    mask = HeadMask.from_heads(["llm.L1H2", "dino.L0H1"], HeadLayout([("llm", 2, 4), ("dino", 2, 4)]))
    path = mask.to_json(tmp_path / "mask.json")
    assert path.read_text() == json.dumps(mask._fields(), indent=2) + "\n"
    assert read_json(path, "head mask") == json.loads(path.read_text())
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: head mask is not valid JSON"):
        HeadMask.from_json(tmp_path / "bad.json")

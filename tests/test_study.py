"""The study runner: configuration checks, the rank-matched LoRA, and resuming finished cells."""

import json
from dataclasses import asdict

import pytest

from robosteer.study import CellResult, StudyConfig, cell_path, lora_matched_rank, run_cell
from robosteer.train.strategies import LoraSettings, count_trainable, make_strategy


def test_config_validation():
    with pytest.raises(ValueError, match=r"unknown study method\(s\) \['dora'\]"):
        StudyConfig(out_dir="x", methods=("dora",))
    with pytest.raises(ValueError, match="unknown task family 'juggle'"):
        StudyConfig(out_dir="x", tasks=("juggle/base",))


@pytest.mark.parametrize("target", [5_000, 50_000, 200_000])
def test_lora_matched_rank_is_closest(tiny_vla, target):
    import copy

    rank = lora_matched_rank(tiny_vla, target)
    counts = {}
    for r in (rank - 1, rank, rank + 1):
        if r < 1:
            continue
        model = copy.deepcopy(tiny_vla)
        make_strategy("lora", lora=LoraSettings(r=r, alpha=r)).prepare(model)
        counts[r] = count_trainable(model)
    assert min(counts, key=lambda r: abs(counts[r] - target)) == rank


def test_finished_cells_are_read_back_not_rerun(tmp_path):
    config = StudyConfig(out_dir=str(tmp_path), tasks=("lift/novel_color",), methods=("zero-shot",), seeds=(0,))
    done = CellResult("lift/novel_color", "zero-shot", 0, target={"success": 0.25, "ci95": [0.1, 0.5], "successes": 5,
                                                                  "episodes": 20})
    path = cell_path(config, "lift/novel_color", "zero-shot", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(asdict(done)))
    assert run_cell(config, "lift/novel_color", "zero-shot", 0) == done  # no simulator needed: nothing reruns


def test_peak_memory_is_measured_per_run_not_per_process():
    from robosteer.experiment import _peak_rss_mb, _reset_peak_rss

    if not _reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs: the peak is the process's")
    block = bytearray(200 * 2**20)
    block[::4096] = b"\x01" * len(block[::4096])  # touch every page
    high = _peak_rss_mb(True)
    del block
    assert _reset_peak_rss()
    assert _peak_rss_mb(True) < high - 150  # the earlier 200 MB peak no longer counts

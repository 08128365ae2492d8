"""The learning-rate grid: its points, the choice of a rate and the study flag it writes."""

import json

import pytest

from robosteer.app.study import StudyConfig, VALIDATION_TASK, DEFAULT_TASKS, CellResult
from robosteer.app.study_grid import TRAINED_METHODS, GridConfig, choose, lrs_flag, run_grid


def test_the_validation_task_is_not_a_target_and_every_trained_method_is_in_the_grid():
    assert VALIDATION_TASK not in DEFAULT_TASKS
    config = GridConfig(out_dir="g")
    assert config.methods == TRAINED_METHODS and "zero-shot" not in TRAINED_METHODS
    assert config.rates("heads-knn") == config.rates("random-heads") == (2e-3, 6e-3, 2e-2)
    assert config.rates("lora-matched") == config.rates("lora") == (2e-4, 5e-4, 1.5e-3)


def test_points_try_every_methods_middle_rate_first():
    config = GridConfig(out_dir="g", methods=("lora", "heads-knn"), head_rates=(0.02, 0.002, 0.006))
    assert config.head_rates == (0.002, 0.006, 0.02)  # sorted
    assert config.points() == [("lora", 5e-4), ("heads-knn", 0.006), ("lora", 2e-4), ("heads-knn", 0.002),
                               ("lora", 1.5e-3), ("heads-knn", 0.02)]


def test_a_grid_point_is_a_one_cell_study_on_validation_seeds_without_retention():
    config = GridConfig(out_dir="g", steps=40, episodes=12)
    study = config.study("heads-knn", 0.006)
    assert (study.out_dir, study.work_dir, study.tasks, study.methods, study.seeds) == \
        ("g/lr-0.006", "g/work", (VALIDATION_TASK,), ("heads-knn",), (0,))
    assert study.lr_for("heads-knn") == 0.006 and study.eval_seed() == 3_000_000 and study.retention_tasks == ()
    assert (study.steps, study.episodes, study.min_lr_ratio) == (40, 12, 0.1)
    assert config.study(None, None).methods == ("zero-shot",)


def test_the_choice_is_the_best_success_with_ties_to_the_smaller_rate():
    rows = [{"method": "lora", "lr": 5e-4, "successes": 9, "episodes": 30},
            {"method": "lora", "lr": 2e-4, "successes": 9, "episodes": 30},
            {"method": "lora", "lr": 1.5e-3, "successes": 4, "episodes": 30},
            {"method": "heads-knn", "lr": 0.006, "successes": 3, "episodes": 30},
            {"method": "heads-knn", "lr": 0.02, "successes": 12, "episodes": 30}]
    chosen = choose(rows)
    assert chosen == {"lora": 2e-4, "heads-knn": 0.02}
    flag = lrs_flag(chosen)
    assert flag == ("lora=0.0002", "heads-knn=0.02")  # the study's method order
    assert StudyConfig(out_dir="s", lrs=flag).method_lrs() == chosen  # the study reads it back unchanged


@pytest.mark.parametrize("bad", [dict(methods=("zero-shot",)), dict(methods=()), dict(head_rates=(0.0, 1e-3)),
                                 dict(lora_rates=(1e-3, 1e-3)), dict(full_rates=()), dict(task="lift/warp")])
def test_bad_grids_are_refused(bad):
    with pytest.raises(ValueError):
        GridConfig(out_dir="g", **bad)


def test_run_grid_writes_the_table_the_choice_and_the_flag(tmp_path, monkeypatch):
    import robosteer.app.study_grid as grid_module

    success = {("zero-shot", None): 1, ("lora", 2e-4): 5, ("lora", 5e-4): 8, ("lora", 1.5e-3): 2,
               ("full", 3e-5): 4, ("full", 1e-4): 4, ("full", 3e-4): 0}
    ran = []

    def fake_cell(study, task, method, seed):
        rate = None if method == "zero-shot" else study.lr_for(method)
        ran.append((method, rate, study.out_dir))
        k = success[(method, rate)]
        return CellResult(task, method, seed, target={"success": k / 10, "ci95": [0.0, 1.0], "successes": k,
                                                      "episodes": 10}, trainable_params=7)

    monkeypatch.setattr(grid_module, "run_cell", fake_cell)
    config = GridConfig(out_dir=str(tmp_path), methods=("full", "lora"), episodes=10, extend=0)
    grid = run_grid(config, progress=False)
    assert ran[0] == ("zero-shot", None, str(tmp_path / "zero-shot"))
    assert [r[:2] for r in ran[1:]] == config.points()
    assert grid["chosen"] == {"lora": 5e-4, "full": 3e-5} and grid["lrs"] == ["lora=0.0005", "full=3e-05"]
    assert [(r["method"], r["lr"]) for r in grid["table"]] == [("lora", 2e-4), ("lora", 5e-4), ("lora", 1.5e-3),
                                                               ("full", 3e-5), ("full", 1e-4), ("full", 3e-4)]
    assert grid["zero_shot"]["successes"] == 1
    assert json.loads((tmp_path / "grid.json").read_text()) == grid


def test_a_best_rate_at_an_edge_is_followed_by_one_rate_beyond_it(tmp_path, monkeypatch):
    import robosteer.app.study_grid as grid_module
    from robosteer.app.study_grid import beyond_edges

    rows = [{"method": "lora", "lr": r, "successes": k, "episodes": 30} for r, k in ((2e-4, 3), (5e-4, 5), (1.5e-3, 9))]
    rows += [{"method": "full", "lr": r, "successes": k, "episodes": 30} for r, k in ((3e-5, 9), (1e-4, 4), (3e-4, 2))]
    rows += [{"method": "heads-knn", "lr": r, "successes": k, "episodes": 30} for r, k in ((2e-3, 3), (6e-3, 5), (2e-2, 1))]
    assert beyond_edges(rows) == [("lora", 0.0045), ("full", 9e-06)]  # heads-knn's best is inside: nothing
    # a run: lora keeps rising at the top edge, twice; extend=2 allows two rounds
    success = {2e-4: 3, 5e-4: 5, 1.5e-3: 9, 0.0045: 12, 0.0135: 4}
    ran = []

    def fake_cell(study, task, method, seed):
        rate = None if method == "zero-shot" else study.lr_for(method)
        ran.append(rate)
        k = 1 if rate is None else success[rate]
        return CellResult(task, method, seed, target={"success": k / 30, "ci95": [0.0, 1.0], "successes": k,
                                                      "episodes": 30})

    monkeypatch.setattr(grid_module, "run_cell", fake_cell)
    grid = run_grid(GridConfig(out_dir=str(tmp_path), methods=("lora",), extend=2), progress=False)
    assert ran == [None, 5e-4, 2e-4, 1.5e-3, 0.0045, 0.0135] and grid["chosen"] == {"lora": 0.0045}
    assert [r["lr"] for r in grid["table"]] == [2e-4, 5e-4, 1.5e-3, 0.0045, 0.0135]


def test_the_studys_default_rates_are_the_committed_grids_choice():
    from pathlib import Path

    from robosteer.app.study import CHOSEN_LRS

    grid = json.loads((Path(__file__).resolve().parents[1] / "docs/results/v5-grid/grid.json").read_text())
    assert StudyConfig(out_dir="s").lrs == CHOSEN_LRS == tuple(grid["lrs"])
    assert grid["chosen"] == choose(grid["table"])  # the committed choice follows from the committed table
    assert all(any(r["method"] == m and r["lr"] == rate for r in grid["table"]) for m, rate in grid["chosen"].items())


def test_the_committed_grid_table_regenerates_from_grid_json():
    from pathlib import Path

    from robosteer.app.study_grid import grid_markdown

    docs = Path(__file__).resolve().parents[1] / "docs"
    table = "\n".join(grid_markdown(json.loads((docs / "results/v5-grid/grid.json").read_text())))
    assert (docs / "results_v5_grid.md").read_text().strip() == table.strip()
    assert table.split("\n", 1)[1].strip() in (docs / "results.md").read_text()

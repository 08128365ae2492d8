"""The study runner: configuration checks, the rank-matched LoRA, and resuming finished cells."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from robosteer.app.study import CellResult, StudyConfig, cell_path, lora_matched_rank, run_cell, study_cells
from robosteer.train.strategies import LoraSettings, count_trainable, make_strategy


def test_config_validation():
    with pytest.raises(ValueError, match=r"unknown study method\(s\) \['dora'\]"):
        StudyConfig(out_dir="x", methods=("dora",))
    with pytest.raises(ValueError, match="unknown task family 'juggle'"):
        StudyConfig(out_dir="x", tasks=("juggle/base",))
    with pytest.raises(ValueError, match="unknown task family 'juggle'"):
        StudyConfig(out_dir="x", retention_tasks=("juggle/base",))
    named = StudyConfig(out_dir="x", tasks=("push", "lift/paraphrase"), retention_tasks=("lift",))
    assert named.tasks == ("push/base", "lift/paraphrase") and named.retention_tasks == ("lift/base",)


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
    from robosteer.app.experiment import _peak_rss_mb, _reset_peak_rss

    if not _reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs: the peak is the process's")
    block = bytearray(200 * 2**20)
    block[::4096] = b"\x01" * len(block[::4096])  # touch every page
    high = _peak_rss_mb(True)
    del block
    assert _reset_peak_rss()
    assert _peak_rss_mb(True) < high - 150  # the earlier 200 MB peak no longer counts


def _found(mask):
    """A discovery result as the study reads it: the mask, and scores of every LLM head (importance in head order)."""
    from types import SimpleNamespace

    import numpy as np

    from robosteer.circuits.scores import HeadScores

    llm = [h for h in mask.layout.heads() if h.tower == "llm"]
    scores = HeadScores(heads=llm, columns={"knn": np.arange(len(llm), dtype=float)}, higher_is_better={"knn": False})
    return SimpleNamespace(mask=mask, scores=scores, column="knn")


def test_zero_shot_is_one_cell_per_task_and_base_retention_is_measured_once(tmp_path, monkeypatch):
    import robosteer.app.experiment as experiment

    config = StudyConfig(out_dir=str(tmp_path), tasks=("lift/novel_color", "push/paraphrase"),
                         methods=("zero-shot", "lora"), seeds=(3, 4), retention_tasks=("lift/base", "push/base"),
                         retention_episodes=4)
    assert study_cells(config) == [("lift/novel_color", "zero-shot", 3), ("lift/novel_color", "lora", 3),
                                   ("push/paraphrase", "zero-shot", 3), ("push/paraphrase", "lora", 3),
                                   ("lift/novel_color", "lora", 4), ("push/paraphrase", "lora", 4)]

    class Result:
        def __init__(self, k, n):
            self.successes, self.n, self.success_rate, self.ci95 = k, n, k / n, (0.0, 1.0)

    calls = []

    def fake_evaluate(policy, tasks, episodes, workers=2, **kw):
        calls.append((tuple(tasks), episodes))
        return {t: Result(1, episodes) for t in tasks}

    def no_demos(*a, **kw):
        raise AssertionError("zero-shot must not collect demonstrations")

    monkeypatch.setattr(experiment, "evaluate_policy", fake_evaluate)
    monkeypatch.setattr(experiment, "collect_demos", no_demos)
    a = run_cell(config, "lift/novel_color", "zero-shot", 3)
    b = run_cell(config, "push/paraphrase", "zero-shot", 3)
    retention_calls = [c for c in calls if len(c[0]) == 2]
    assert retention_calls == [(("lift/base", "push/base"), 4)]  # once per study, not per cell
    assert a.retention == b.retention and set(a.retention) == {"lift/base", "push/base"}
    assert a.settings == {"demos": 0} and a.trainable_params == 0
    # a subset of the measured tasks with the same episodes is read back, not measured again
    subset = StudyConfig(out_dir=str(tmp_path), tasks=("lift/physics",), methods=("zero-shot",), seeds=(3,),
                         retention_tasks=("push/base",), retention_episodes=4)
    n_calls = len(calls)
    assert run_cell(subset, "lift/physics", "zero-shot", 3).retention == {"push/base": a.retention["push/base"]}
    assert len(calls) == n_calls + 1  # the target evaluation only
    # other retention settings (more episodes, a task not measured): the saved base retention does not match
    for i, (tasks, episodes) in enumerate([(("place/base", "push/base"), 4), (("lift/base", "push/base"), 6)]):
        other = StudyConfig(out_dir=str(tmp_path), tasks=("lift/physics",), methods=("zero-shot",), seeds=(i,),
                            retention_tasks=tasks, retention_episodes=episodes)
        run_cell(other, "lift/physics", "zero-shot", i)
        assert calls[-1] == (tasks, episodes)


def test_a_finetuned_cell_records_its_cost_and_evaluates_the_adapted_policy(tmp_path, monkeypatch, tiny_vla):
    """The plumbing of one finetuned cell, with the simulator, discovery and training replaced by fakes."""
    from types import SimpleNamespace

    import robosteer.circuits.discover as discover_module
    import robosteer.app.experiment as experiment
    import robosteer.models as models
    from robosteer.masks import HeadMask

    mask = HeadMask.from_heads(["llm.L0H1", "llm.L1H2"], tiny_vla.head_layout)
    trained, evaluated = [], []
    collected = []

    def fake_collect(task, n, out, seed, workers, cameras):
        collected.append(cameras)
        return f"demos of {task}/{seed}"

    monkeypatch.setattr(experiment, "collect_demos", fake_collect)
    monkeypatch.setattr(models, "load_vla", lambda policy: tiny_vla)
    monkeypatch.setattr(discover_module, "discover", lambda base, demos, cfg, out, probes: _found(mask))

    def fake_finetune(base, demos, method, config, mask=None, lora=None):
        trained.append((demos, method, lora.r, config.seed))
        return experiment.FinetuneResult(method, Path(config.out_dir) / "policy.json", 123, 4.5, 600.0, 1.0,
                                         ["llm.L0H1", "llm.L1H2"], resumed_at_step=0)

    class Result:
        successes, n, success_rate, ci95 = 3, 10, 0.3, (0.1, 0.6)

    def fake_evaluate(policy, tasks, episodes, workers=2, cameras=None, **kw):
        evaluated.append((policy, tuple(tasks), cameras))
        return {t: Result() for t in tasks}

    monkeypatch.setattr(experiment, "finetune", fake_finetune)
    monkeypatch.setattr(experiment, "evaluate_policy", fake_evaluate)
    config = StudyConfig(out_dir=str(tmp_path), tasks=("push/paraphrase",), methods=("lora-matched",), seeds=(2,))
    cell = run_cell(config, "push/paraphrase", "lora-matched", 2)
    head_dim = tiny_vla.config.llm_dim // tiny_vla.head_layout.shape("llm")[1]
    rank = lora_matched_rank(tiny_vla, 2 * 2 * tiny_vla.config.llm_dim * head_dim)
    assert trained == [("demos of push/paraphrase/40", "lora", rank, 2)]  # demonstrations on expert seeds 40-59
    assert cell.settings["lora_r"] == rank and cell.settings["demos"] == 20 and cell.settings["demo_seeds"] == [40, 59]
    assert (cell.trainable_params, cell.train_seconds, cell.peak_rss_mb) == (123, 4.5, 600.0)
    policy = str(tmp_path / "work" / "push_paraphrase" / "seed2" / "lora-matched-lr0.0002" / "policy.json")  # its chosen rate
    # never the base; the default policy's own views (v5: agentview and wrist), for the demonstrations and both
    # evaluations
    two = ("agentview", "wrist")
    assert evaluated == [(policy, ("push/paraphrase",), two), (policy, ("lift/base", "place/base", "push/base"), two)]
    assert collected == [two]
    assert not (tmp_path / "base_retention.json").exists()
    assert json.loads(cell_path(config, "push/paraphrase", "lora-matched", 2).read_text())["heads"] == cell.heads


def test_each_study_seed_collects_its_own_demonstrations():
    config = StudyConfig(out_dir="unused", seeds=(0, 1, 2), demos=20)
    sets = [set(range(config.demo_seed(s), config.demo_seed(s) + config.demos)) for s in config.seeds]
    assert sets[0] == set(range(20)) and all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])
    with pytest.raises(ValueError, match="below the evaluation seeds"):
        StudyConfig(out_dir="unused", seeds=(0, 60_000), demos=20)  # would collect on evaluation seeds
    with pytest.raises(ValueError, match="seeds must be >= 0"):
        StudyConfig(out_dir="unused", seeds=(-1,))


def test_study_methods_name_registered_training_methods_and_selectors():
    from robosteer.app.study import ARMS, SEEDLESS_METHODS, STUDY_METHODS, Arm
    from robosteer.circuits.config import METHODS as SELECTORS
    from robosteer.train.strategies import METHODS

    assert STUDY_METHODS == ("zero-shot", "lora", "lora-matched", "heads-knn", "heads-activation", "heads-attribution",
                             "random-heads", "full") and SEEDLESS_METHODS == ("zero-shot",)
    assert ARMS["heads-activation"] == Arm("heads", selector="activation")
    assert all(arm.train is None or arm.train in METHODS for arm in ARMS.values())
    assert all(arm.selector in SELECTORS for arm in ARMS.values())


def test_an_arm_outside_the_registries_is_refused():
    from robosteer.app.study import Arm

    assert Arm(None) == Arm(None, selector="knn") and Arm("heads", selector="attribution").train == "heads"
    with pytest.raises(ValueError, match=r"Arm\.train must be None or a finetuning method .*got 'adapter'"):
        Arm("adapter")
    with pytest.raises(ValueError, match=r"Arm\.selector must be a head selector .*got 'magic'"):
        Arm("heads", selector="magic")


def test_finetuned_cells_record_the_settings_the_committed_matrix_records():
    """Every committed finetuned cell's ``settings``, rebuilt from study.json with steering_config + LoraSettings,
    comes out equal, in the same key order (the JSON a new cell writes is the same bytes); the schedule is the one
    the cells were trained on (warm-up 10%, cosine, betas 0.9/0.95, one bin of label smoothing)."""
    from robosteer.app.experiment import WARMUP_FRACTION, steering_config
    from robosteer.app.study import recorded_settings
    from robosteer.train.strategies import LoraSettings

    root = Path(__file__).resolve().parents[1] / "docs" / "results" / "matrix"
    study = json.loads((root / "study.json").read_text())
    config = StudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in study.items()})
    cells = [json.loads(p.read_text()) for p in sorted((root / "cells").glob("*/*/seed*.json"))]
    finetuned = [c for c in cells if c["method"] != "zero-shot"]
    assert len(finetuned) == 90
    for cell in finetuned:
        train = steering_config("unused", steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                seed=cell["seed"])
        lora = LoraSettings()
        if cell["method"] == "lora-matched":
            lora = LoraSettings(r=cell["settings"]["lora_r"], alpha=cell["settings"]["lora_alpha"])
        first = config.demo_seed(cell["seed"])
        settings = {**recorded_settings(train, lora, WARMUP_FRACTION), "demos": config.demos,
                    "demo_seeds": [first, first + config.demos - 1]}
        assert settings.pop("min_lr_ratio") == 0.0  # the v1 cells ran before the floor was a study setting (at 0)
        if "demo_seeds" not in cell["settings"]:  # seed-0 cells ran before the demo seeds were recorded
            assert cell["seed"] == 0
            del settings["demo_seeds"]
        assert json.dumps(settings) == json.dumps(cell["settings"]), cell["task"] + " " + cell["method"]


def test_per_method_rates_are_parsed_once_and_malformed_ones_refused():
    config = StudyConfig(out_dir="x", lr=5e-4, lrs=("heads-knn=0.006", "lora=2e-4"))
    assert config.method_lrs() == {"heads-knn": 0.006, "lora": 2e-4}
    assert (config.lr_for("heads-knn"), config.lr_for("lora"), config.lr_for("full")) == (0.006, 2e-4, 5e-4)
    for bad, message in ((("heads-knn",), "expected method=rate"), (("heads-knn=fast",), "expected method=rate"),
                         (("heads-knn=-1",), "rate > 0"), (("zero-shot=1e-3",), "not a finetuned study method"),
                         (("dora=1e-3",), "not a finetuned study method"),
                         (("lora=1e-3", "lora=2e-3"), "names 'lora' twice")):
        with pytest.raises(ValueError, match=message):
            StudyConfig(out_dir="x", lrs=bad)
    with pytest.raises(ValueError, match="evaluation_seeds must be one of"):
        StudyConfig(out_dir="x", evaluation_seeds="test")


@pytest.mark.parametrize("seeds, first", [("evaluation", 1_000_000), ("validation", 3_000_000)])
def test_a_cell_trains_at_its_methods_rate_and_scores_on_the_chosen_seeds(tmp_path, monkeypatch, tiny_vla, seeds,
                                                                         first):
    from types import SimpleNamespace

    import robosteer.circuits.discover as discover_module
    import robosteer.app.experiment as experiment
    import robosteer.models as models
    from robosteer.masks import HeadMask

    mask = HeadMask.from_heads(["llm.L0H1"], tiny_vla.head_layout)
    trained, scored = [], []
    monkeypatch.setattr(experiment, "collect_demos", lambda task, n, out, seed, workers, cameras: "demos")
    monkeypatch.setattr(models, "load_vla", lambda policy: tiny_vla)
    monkeypatch.setattr(discover_module, "discover", lambda base, demos, cfg, out, probes: _found(mask))

    def fake_finetune(base, demos, method, config, mask=None, lora=None):
        trained.append((method, config.lr, config.min_lr_ratio, config.schedule))
        return experiment.FinetuneResult(method, Path(config.out_dir) / "policy.json", 1, 1.0, 1.0, 1.0, [])

    class Result:
        successes, n, success_rate, ci95 = 1, 2, 0.5, (0.1, 0.9)

    def fake_evaluate(policy, tasks, episodes, workers=2, cameras=None, seed=None, **kw):
        scored.append((tuple(tasks), seed))
        return {t: Result() for t in tasks}

    monkeypatch.setattr(experiment, "finetune", fake_finetune)
    monkeypatch.setattr(experiment, "evaluate_policy", fake_evaluate)
    config = StudyConfig(out_dir=str(tmp_path), tasks=("lift/novel_form",), methods=("heads-knn", "full"), seeds=(0,),
                         lr=1e-4, lrs=("heads-knn=0.006",), evaluation_seeds=seeds, retention_tasks=("lift",))
    heads = run_cell(config, "lift/novel_form", "heads-knn", 0)
    run_cell(config, "lift/novel_form", "full", 0)
    assert trained == [("heads", 0.006, 0.1, "cosine"), ("full", 1e-4, 0.1, "cosine")]
    assert heads.settings["lr"] == 0.006 and heads.settings["min_lr_ratio"] == 0.1
    assert scored == [(("lift/novel_form",), first), (("lift/base",), first)] * 2
    no_retention = replace(config, out_dir=str(tmp_path / "grid"), retention_tasks=())
    assert run_cell(no_retention, "lift/novel_form", "full", 0).retention == {}
    assert scored[-1] == (("lift/novel_form",), first)  # the target only


def test_studies_sharing_a_work_folder_share_demonstrations_and_train_each_rate_in_its_own_folder(tmp_path,
                                                                                                  monkeypatch,
                                                                                                  tiny_vla):
    from types import SimpleNamespace

    import robosteer.circuits.discover as discover_module
    import robosteer.app.experiment as experiment
    import robosteer.models as models
    from robosteer.masks import HeadMask

    mask = HeadMask.from_heads(["llm.L0H1"], tiny_vla.head_layout)
    demos_at, runs_at = [], []
    monkeypatch.setattr(experiment, "collect_demos",
                        lambda task, n, out, seed, workers, cameras: demos_at.append(Path(out)) or "demos")
    monkeypatch.setattr(models, "load_vla", lambda policy: tiny_vla)
    monkeypatch.setattr(discover_module, "discover", lambda base, demos, cfg, out, probes: _found(mask))

    def fake_finetune(base, demos, method, config, mask=None, lora=None):
        runs_at.append(Path(config.out_dir))
        return experiment.FinetuneResult(method, Path(config.out_dir) / "policy.json", 1, 1.0, 1.0, 1.0, [])

    class Result:
        successes, n, success_rate, ci95 = 1, 2, 0.5, (0.1, 0.9)

    monkeypatch.setattr(experiment, "finetune", fake_finetune)
    monkeypatch.setattr(experiment, "evaluate_policy", lambda policy, tasks, *a, **kw: {t: Result() for t in tasks})
    shared = tmp_path / "shared-work"
    for rate in ("0.002", "0.02"):
        config = StudyConfig(out_dir=str(tmp_path / f"lr-{rate}"), work_dir=str(shared), tasks=("lift/novel_form",),
                             methods=("heads-knn",), seeds=(1,), lrs=(f"heads-knn={rate}",), retention_tasks=())
        run_cell(config, "lift/novel_form", "heads-knn", 1)
        assert cell_path(config, "lift/novel_form", "heads-knn", 1).is_file()
    assert demos_at == [shared / "lift_novel_form" / "seed1" / "demos"] * 2
    assert runs_at == [shared / "lift_novel_form" / "seed1" / "heads-knn-lr0.002",
                       shared / "lift_novel_form" / "seed1" / "heads-knn-lr0.02"]
    assert StudyConfig(out_dir="o").work_root() == Path("o") / "work"


def test_rank_bands_take_the_first_the_median_and_the_last_k():
    from robosteer.app.study import band_heads

    ranked = list("abcdefghij")
    assert band_heads(ranked, 3, "top") == ["a", "b", "c"]
    assert band_heads(ranked, 3, "middle") == ["d", "e", "f"]
    assert band_heads(ranked, 3, "bottom") == ["h", "i", "j"]
    for bad in ((ranked, 0, "top"), (ranked, 11, "top"), (ranked, 2, "upper")):
        with pytest.raises(ValueError):
            band_heads(*bad)


def test_a_band_cell_trains_that_band_of_the_selectors_ranking_at_the_selectors_rate(tmp_path, monkeypatch,
                                                                                    tiny_vla):
    from types import SimpleNamespace

    import numpy as np

    import robosteer.circuits.discover as discover_module
    import robosteer.app.experiment as experiment
    import robosteer.models as models
    from robosteer.app.study import ARMS, Arm, STUDY_METHODS
    from robosteer.circuits.scores import HeadScores
    from robosteer.masks import HeadMask

    assert "heads-knn-middle" in ARMS and "heads-knn-middle" not in STUDY_METHODS
    with pytest.raises(ValueError, match="band"):
        Arm("lora", band="bottom")
    layout = tiny_vla.head_layout
    llm = [h for h in layout.heads() if h.tower == "llm"]
    # importance falls with the head's index: the ranking is llm in order
    scores = HeadScores(heads=llm, columns={"knn": np.arange(len(llm), dtype=float)}, higher_is_better={"knn": False})
    mask = HeadMask.from_heads(llm[:2], layout)
    trained = []
    monkeypatch.setattr(experiment, "collect_demos", lambda task, n, out, seed, workers, cameras: "demos")
    monkeypatch.setattr(models, "load_vla", lambda policy: tiny_vla)
    monkeypatch.setattr(discover_module, "discover",
                        lambda base, demos, cfg, out, probes: SimpleNamespace(mask=mask, scores=scores, column="knn"))

    def fake_finetune(base, demos, method, config, mask=None, lora=None):
        trained.append((method, config.lr, [str(h) for h in mask.heads]))
        return experiment.FinetuneResult(method, Path(config.out_dir) / "policy.json", 1, 1.0, 1.0, 1.0,
                                         [str(h) for h in mask.heads])

    class Result:
        successes, n, success_rate, ci95 = 1, 2, 0.5, (0.1, 0.9)

    monkeypatch.setattr(experiment, "finetune", fake_finetune)
    monkeypatch.setattr(experiment, "evaluate_policy", lambda policy, tasks, *a, **kw: {t: Result() for t in tasks})
    config = StudyConfig(out_dir=str(tmp_path), tasks=("lift/novel_form",), seeds=(0,), top_k=2, retention_tasks=(),
                         methods=("heads-knn", "heads-knn-bottom"), lrs=("heads-knn=0.006",))
    top = run_cell(config, "lift/novel_form", "heads-knn", 0)
    bottom = run_cell(config, "lift/novel_form", "heads-knn-bottom", 0)
    n = len(llm)
    assert trained == [("heads", 0.006, [str(llm[0]), str(llm[1])]),
                       ("heads", 0.006, [str(llm[n - 2]), str(llm[n - 1])])]
    assert (top.heads_score, bottom.heads_score, bottom.score_column) == (0.5, n - 1.5, "knn")

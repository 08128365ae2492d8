"""Every command that runs a policy in the simulator shows it the views it takes, unless told otherwise.

A tiny two-view model (``n_views=2``, saved as a checkpoint folder) runs under ``robosteer evaluate``,
``evaluate`` / ``measure_policy`` / ``evaluate_policy`` without a ``SimConfig``, ``robosteer explain`` and one
study cell (collection, discovery, finetuning, evaluation) without ``--cameras``; a spy on ``VLAPolicy``
counts the views each step really received. A one-view token policy (v1's shape) still gets the agentview
alone, the shipped default (v5) both views, the expert keeps the agentview, named cameras win, and named cameras the policy cannot take stop with a clear error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from robosteer.app.policy import PolicyFactory, VLAPolicy, load_policy, policy_cameras, policy_views, write_policy_file
from robosteer.cli import main
from robosteer.sim.cameras import SINGLE_VIEW, cameras_for_views

from .train_helpers import single_thread, tiny_train_vla  # noqa: F401  (single_thread: an autouse fixture)

TWO = ("agentview", "wrist")


def save_tiny(root: Path, **changes) -> Path:
    """The training tests' tiny OpenVLA with config ``changes``, saved as a checkpoint folder under ``root``."""
    from robosteer.models.loading import build_vla_from_config

    base = tiny_train_vla()
    out = root / "policy"
    build_vla_from_config(base.config.replace(**changes), tokenizer=base.tokenizer, seed=1).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def two_view(tmp_path_factory) -> Path:
    """A tiny OpenVLA taking the agentview and the wrist view with OFT's regression head (the default's shape)."""
    return save_tiny(tmp_path_factory.mktemp("two-view"), action_head="l1-regression", normalization="bounds_q99",
                     n_views=2)


@pytest.fixture(scope="module")
def one_view(tmp_path_factory) -> Path:
    """A tiny one-view OpenVLA with 256-bin action tokens (v1's shape)."""
    return save_tiny(tmp_path_factory.mktemp("one-view"))


@pytest.fixture
def seen(monkeypatch) -> list[int]:
    """The number of camera views of every observation a ``VLAPolicy`` is called with, in order."""
    counts: list[int] = []
    call = VLAPolicy.__call__

    def spy(self, image, instruction, proprio=None):
        counts.append(len(image) if isinstance(image, (tuple, list)) else 1)
        return call(self, image, instruction, proprio)

    monkeypatch.setattr(VLAPolicy, "__call__", spy)
    return counts


# ----------------------------------------------------------------- reading a policy's views
@pytest.mark.parametrize("n_views, cameras", [(1, SINGLE_VIEW), (2, TWO)])
def test_a_view_count_names_its_cameras_main_first(n_views, cameras):
    assert cameras_for_views(n_views) == cameras


@pytest.mark.parametrize("n_views", [0, 3, -1, 1.0, True])
def test_a_view_count_without_default_cameras_asks_for_them(n_views):
    with pytest.raises(ValueError, match="pass the cameras explicitly"):
        cameras_for_views(n_views)


def test_views_are_read_from_the_config_without_loading_weights(two_view, tmp_path, monkeypatch, one_view):
    import robosteer.models as models
    import robosteer.models.loading as loading

    def no_weights(*a, **kw):
        raise AssertionError("reading a policy's views must not load its weights")

    monkeypatch.setattr(loading, "load_vla", no_weights)
    monkeypatch.setattr(models, "load_vla", no_weights)
    config_only = tmp_path / "config-only"  # the config alone: a weight read would fail
    config_only.mkdir()
    shutil.copy(two_view / "config.json", config_only / "config.json")
    adapted = write_policy_file(tmp_path / "two.json", base=config_only, adapter=tmp_path / "adapter")
    on_default = write_policy_file(tmp_path / "default.json", base="default", adapter=tmp_path / "adapter")
    on_one = write_policy_file(tmp_path / "one.json", base=one_view, adapter=tmp_path / "adapter")
    cases = {"expert": (None, SINGLE_VIEW), "default": (2, TWO), str(config_only): (2, TWO),
             str(adapted): (2, TWO), str(on_default): (2, TWO), str(one_view): (1, SINGLE_VIEW),
             str(on_one): (1, SINGLE_VIEW)}
    for spec, (n_views, cameras) in cases.items():
        assert (policy_views(spec), policy_cameras(spec), PolicyFactory(spec).cameras) == (n_views, cameras, cameras), spec


def test_named_cameras_win_and_a_mismatch_is_a_clear_error(two_view, one_view):
    assert policy_cameras("expert", TWO) == TWO  # the expert reads no image: any views
    assert policy_cameras(str(two_view), ["agentview", "wrist"]) == TWO
    assert policy_cameras(str(one_view), "agentview") == SINGLE_VIEW
    with pytest.raises(ValueError, match=r"gives 1 view\(s\) \(agentview\); this policy takes 2 \(its n_views\)"):
        policy_cameras(str(two_view), ("agentview",))
    with pytest.raises(ValueError, match="this policy takes 1"):
        policy_cameras(str(one_view), TWO)
    with pytest.raises(ValueError, match="must start with 'agentview'"):
        policy_cameras(str(two_view), ("wrist", "agentview"))


# ----------------------------------------------------------------- robosteer evaluate and the evaluation API
def test_evaluate_shows_a_two_view_policy_both_views(two_view, seen, capsys):
    assert main(["evaluate", "--policy", str(two_view), "--task", "lift", "--episodes", "2", "--horizon", "2"]) == 0
    assert seen == [2] * 4 and "lift/base: success" in capsys.readouterr().out
    assert main(["evaluate", "--policy", str(two_view), "--task", "lift", "--episodes", "1", "--horizon", "1",
                 "--cameras", "agentview"]) == 2
    assert "this policy takes 2 (its n_views)" in capsys.readouterr().err and len(seen) == 4  # stopped before a step


def test_a_one_view_policy_still_gets_the_agentview_alone_and_the_default_both(one_view, seen, capsys):
    assert main(["evaluate", "--policy", str(one_view), "--task", "push", "--episodes", "1", "--horizon", "2"]) == 0
    assert seen == [1, 1]
    assert main(["evaluate", "--policy", str(one_view), "--task", "push", "--episodes", "1", "--horizon", "1",
                 "--cameras", "agentview,wrist"]) == 2
    assert "this policy takes 1" in capsys.readouterr().err and seen == [1, 1]
    assert main(["evaluate", "--policy", "default", "--task", "push", "--episodes", "1", "--horizon", "2"]) == 0
    assert seen == [1, 1, 2, 2]


def test_evaluation_without_a_sim_config_renders_the_policys_own_views(two_view, one_view, seen, monkeypatch):
    import robosteer.sim.collect as collect
    from robosteer.app.experiment import evaluate_policy
    from robosteer.sim.evaluate import evaluate
    from robosteer.sim.expert import ScriptedExpert

    assert evaluate(load_policy(two_view), "lift", episodes=1, horizon=2, progress=False).n == 1
    assert seen == [2, 2]

    configs = []  # what the worker processes would render: measure_policy's SimConfig
    monkeypatch.setattr(collect, "run_expert_episodes", lambda jobs, config, **kw: configs.append(config) or iter(()))
    collect.measure_policy(PolicyFactory(str(two_view)), ["lift"], episodes=1)
    collect.measure_policy(ScriptedExpert, ["lift"], episodes=1)
    evaluate_policy(two_view, ["lift"], 1)
    evaluate_policy(one_view, ["lift"], 1)
    assert main(["evaluate", "--policy", str(two_view), "--task", "lift", "--episodes", "1", "--workers", "2"]) == 0
    assert [c.cameras for c in configs] == [TWO, SINGLE_VIEW, TWO, SINGLE_VIEW, TWO]
    with pytest.raises(ValueError, match="this policy takes 2"):
        evaluate_policy(two_view, ["lift"], 1, cameras=SINGLE_VIEW)


# ----------------------------------------------------------------- robosteer explain
def test_explain_runs_a_two_view_policy_in_both_views(two_view, seen, tmp_path, capsys):
    out = tmp_path / "explain"
    assert main(["explain", "--policy", str(two_view), "--task", "lift", "--steps", "2", "--out", str(out)]) == 0
    record = json.loads((out / "explain.json").read_text())
    assert record["views"] == list(TWO) and len(record["steps"]) == 2 and seen == [2, 2]
    assert main(["explain", "--policy", str(two_view), "--task", "lift", "--steps", "1", "--cameras", "agentview",
                 "--out", str(tmp_path / "wrong")]) == 2
    assert "this policy takes 2 (its n_views)" in capsys.readouterr().err and not (tmp_path / "wrong").exists()


# ----------------------------------------------------------------- the experiment pipeline
def test_discovery_probes_render_the_models_views(two_view, monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    import robosteer.app.sim_probes as sim_probes
    import robosteer.circuits.discover as discover_module
    from robosteer.circuits.config import DiscoverConfig
    from robosteer.models import load_vla

    asked = []
    monkeypatch.setattr(sim_probes, "sim_probe", lambda kind, **kw: asked.append(kw["cameras"]) or kind)
    monkeypatch.setattr(discover_module, "discover", lambda vla, demos, config, out, probes: probes)
    demos = SimpleNamespace(tasks=["lift/base"], image=lambda i: np.zeros((64, 64, 3), np.uint8))  # no cameras
    config = DiscoverConfig(method="attribution", probes=("visual",))
    assert sim_probes.discover_in_sim(load_vla(two_view), demos, config) == ["visual"]
    assert sim_probes.discover_in_sim(tiny_train_vla(), demos, config) == ["visual"]
    assert asked == [TWO, SINGLE_VIEW]


def test_a_study_cell_collects_trains_and_evaluates_in_the_policys_views(two_view, seen, tmp_path):
    """One real heads cell on a two-view base, no cameras named: two-view demonstrations, heads found and trained
    on them, and every evaluation step of the finetuned policy shown both views. The base has the next default's
    shape (continuous actions, FiLM): the schedule does not smooth labels it does not have."""
    from robosteer.app.study import StudyConfig, run_cell
    from robosteer.data.dataset import DemoDataset

    base = save_tiny(tmp_path, n_views=2, action_head="l1-regression", normalization="bounds_q99", use_film=True)
    config = StudyConfig(out_dir=str(tmp_path), policy=str(base), tasks=("lift/base",), methods=("heads-knn",),
                         seeds=(0,), demos=2, top_k=2, steps=2, batch_size=4, episodes=1, retention_tasks=("lift/base",),
                         retention_episodes=1, workers=1)
    assert config.cameras is None and config.views() == TWO
    cell = run_cell(config, "lift/base", "heads-knn", 0)
    assert DemoDataset(tmp_path / "work" / "lift_base" / "seed0" / "demos").cameras == TWO
    assert len(cell.heads) == 2 and cell.trainable_params > 0 and cell.target["episodes"] == 1
    assert cell.settings["label_smoothing"] == 0.0
    assert len(seen) == 2 * 60 and set(seen) == {2}  # target and retention: lift's 60-step horizon each
    with pytest.raises(ValueError, match="this policy takes 2"):
        run_cell(StudyConfig(out_dir=str(tmp_path / "x"), policy=str(two_view), cameras=SINGLE_VIEW, seeds=(0,)),
                 "lift/base", "heads-knn", 0)


def test_the_steering_schedule_smooths_only_token_labels(two_view, one_view, tmp_path):
    from robosteer.app.experiment import steering_config, token_actions
    from robosteer.app.policy import write_policy_file

    assert token_actions(one_view) and token_actions("expert") and not token_actions(two_view)
    assert not token_actions("default")  # v5: the L1 regression head
    assert not token_actions(write_policy_file(tmp_path / "policy.json", two_view))  # through a policy file
    assert steering_config(tmp_path).label_smoothing == 1.0
    assert steering_config(tmp_path, action_tokens=False).label_smoothing == 0.0

"""examples/franka_finetune.py accepts every held-out adaptation task (fast) and runs end to end on each (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robosteer.sim.tasks import get_split

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "franka_finetune.py"
HELDOUT = [str(t) for t in get_split("default").heldout]


def run_example(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_help_lists_every_heldout_task():
    out = run_example("--help", timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert all(t in text for t in HELDOUT)
    assert "--cameras CAMERAS" in text and "default: the base policy's own views" in text


@pytest.mark.slow
@pytest.mark.parametrize("task", HELDOUT)
def test_runs_end_to_end_on_every_heldout_task(tmp_path, task):
    family, variation = task.split("/")
    out = run_example("--task", family, "--variation", variation, "--demos", "2", "--steps", "2", "--episodes", "1",
                      "--workers", "1", "--batch-size", "4", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / task.replace("/", "_") / "results.json").read_text())
    assert results["task"] == task and [r["policy"] for r in results["results"]] == ["zero-shot", "heads", "lora"]
    assert (tmp_path / task.replace("/", "_") / "heads" / "headmap.html").is_file()


@pytest.mark.slow
def test_runs_a_two_view_policy_without_cameras(tmp_path):
    """The main job on a tiny base of the next default's shape (two views, continuous actions, FiLM), no
    --cameras: the demonstrations are recorded in both views and every policy is evaluated in them."""
    from robosteer.data.dataset import DemoDataset
    from robosteer.models.loading import build_vla_from_config

    from .train_helpers import tiny_train_vla

    base = tiny_train_vla()
    shape = dict(n_views=2, action_head="l1-regression", normalization="bounds_q99", use_film=True)
    build_vla_from_config(base.config.replace(**shape), tokenizer=base.tokenizer, seed=1).save_pretrained(
        tmp_path / "base")
    out = run_example("--policy", str(tmp_path / "base"), "--task", "lift", "--variation", "paraphrase", "--demos", "2",
                      "--steps", "2", "--episodes", "1", "--workers", "1", "--batch-size", "4", "--top-k", "2",
                      "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(agentview,wrist)" in out.stdout
    assert DemoDataset(tmp_path / "run" / "lift_paraphrase" / "demos").cameras == ("agentview", "wrist")
    results = json.loads((tmp_path / "run" / "lift_paraphrase" / "results.json").read_text())
    assert [r["episodes"] for r in results["results"]] == [1, 1, 1]

"""Demo recording, the two loaders, the evaluator and the sim CLI."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from robosteer.cli import main
from robosteer.data.dataset import DemoDataset
from robosteer.data.demo_format import DemoFormatError
from robosteer.sim.evaluate import evaluate
from robosteer.sim.expert import ScriptedExpert
from robosteer.data.keyframes import KEYFRAME_NAMES
from robosteer.data.lerobot import LeRobotDataset
from robosteer.app.policy import load_policy


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "lift"
    assert main(["collect", "--task", "lift", "--episodes", "3", "--out", str(out), "--seed", "10"]) == 0
    return out


def test_collect_cli_writes_a_dataset_the_loader_reads_back(demos, capsys):
    ds = DemoDataset(demos)
    meta = json.loads((demos / "meta.json").read_text())
    assert meta["num_episodes"] == ds.num_episodes == 3 and meta["tasks"] == ["lift/base"]
    assert len(ds) == meta["num_steps"] > 3 * 10
    frame = ds[0]
    assert frame.image.shape == (64, 64, 3) and frame.image.dtype == np.uint8
    assert frame.action.dtype == np.float32 and frame.action.shape == (7,) and frame.proprio.shape == (7,)
    assert frame.instruction.startswith("pick up the ") and frame.task == "lift/base"
    assert frame.keyframes["is_first"] and frame.episode == 0 and frame.step == 0
    for e in range(3):
        idx = ds.episode_frames(e)
        assert ds.keyframes["is_last"][idx[-1]] and ds.keyframes["is_last"][idx].sum() == 1
        assert ds.keyframes["gripper_flip"][idx].sum() >= 1  # the grasp
    assert ds.success.all()
    batch = next(ds.batches(5, seed=1))
    assert batch["images"].shape == (5, 64, 64, 3) and batch["keyframes"].shape == (5, len(KEYFRAME_NAMES))
    stats = ds.statistics["robosteer_sim"]
    assert stats["action"]["mask"] == [True] * 6 + [False] and stats["num_trajectories"] == 3
    assert json.loads((demos / "dataset_statistics.json").read_text()) == ds.statistics
    assert np.allclose(stats["action"]["mean"], ds.actions.mean(0), atol=1e-5)


def test_corrupt_demo_files_name_file_and_field(demos, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(demos, bad)
    table = pq.read_table(bad / "steps.parquet").drop(["proprio"])
    pq.write_table(table, bad / "steps.parquet")
    with pytest.raises(DemoFormatError, match=r"steps\.parquet: field 'proprio'"):
        DemoDataset(bad)

    shutil.rmtree(bad)
    shutil.copytree(demos, bad)
    np.save(bad / "images" / "episode_000001.npy", np.zeros((2, 8, 8, 3), np.uint8))
    ds = DemoDataset(bad)
    with pytest.raises(DemoFormatError, match=r"episode_000001\.npy: field 'images'"):
        ds[int(ds.episode_frames(1)[0])]

    meta = json.loads((bad / "meta.json").read_text())
    meta["format_version"] = 99
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DemoFormatError, match=r"meta\.json: field 'format_version'"):
        DemoDataset(bad)


def _png(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _write_lerobot(root, version="v2.1", video=False):
    rng = np.random.default_rng(0)
    feature = {"dtype": "video" if video else "image", "shape": [16, 16, 3], "names": ["height", "width", "channel"]}
    info = {
        "codebase_version": version,
        "fps": 10,
        "chunks_size": 1000,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            "observation.images.image": feature,
            "observation.state": {"dtype": "float32", "shape": [8]},
            "action": {"dtype": "float32", "shape": [7]},
        },
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    tasks = ["pick up the red cube", "push the blue cube to the left"]
    if version.startswith("v3"):
        pq.write_table(pa.table({"task_index": [0, 1], "task": tasks}), root / "meta" / "tasks.parquet")
    else:
        lines = [json.dumps({"task_index": i, "task": t}) for i, t in enumerate(tasks)]
        (root / "meta" / "tasks.jsonl").write_text("\n".join(lines))
    images = {}
    for ep, length in enumerate((4, 3)):
        gripper = [-1.0] * (length - 1) + [1.0]
        actions = [[*rng.uniform(-1, 1, 6), g] for g in gripper]
        frames = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(length)]
        images[ep] = frames
        columns = {
            "observation.state": [list(rng.normal(size=8)) for _ in range(length)],
            "action": actions,
            "episode_index": [ep] * length,
            "frame_index": list(range(length)),
            "task_index": [ep] * length,
            "timestamp": [t / 10 for t in range(length)],
        }
        if not video:
            columns["observation.images.image"] = [{"bytes": _png(f), "path": None} for f in frames]
        name = f"file-{ep:03d}.parquet" if version.startswith("v3") else f"episode_{ep:06d}.parquet"
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), root / "data" / "chunk-000" / name)
    return images


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_folder_loads_through_the_same_interface(tmp_path, version):
    images = _write_lerobot(tmp_path, version)
    ds = LeRobotDataset(tmp_path)
    assert len(ds) == 7 and ds.num_episodes == 2
    frame = ds[5]
    assert frame.episode == 1 and frame.step == 1 and frame.instruction == "push the blue cube to the left"
    assert np.array_equal(frame.image, images[1][1])
    assert frame.proprio.shape == (8,) and frame.action.dtype == np.float32
    last = ds.episode_frames(0)[-1]
    assert ds.keyframes["gripper_flip"][last] and ds.keyframes["is_last"][last]
    batch = next(ds.batches(4, shuffle=False))
    assert batch["images"].shape == (4, 16, 16, 3) and batch["instructions"][0] == "pick up the red cube"
    assert ds.statistics[tmp_path.name]["num_trajectories"] == 2


def test_lerobot_video_without_decoder_is_a_clear_error(tmp_path):
    _write_lerobot(tmp_path, video=True)
    with pytest.raises(ValueError, match="cannot decode video feature 'observation.images.image'"):
        LeRobotDataset(tmp_path)


def test_evaluate_the_expert_with_wilson_interval_and_gif(tmp_path):
    result = evaluate(ScriptedExpert(), "lift/base", episodes=2, seed=3, video_dir=tmp_path, progress=False)
    assert result.n == 2 and result.successes == 2
    low, high = result.ci95
    assert 0.3 < low < 0.4 and high == 1.0
    gif = result.episodes[0].video
    assert gif and gif.endswith(".gif")
    from imageio.v2 import mimread

    frames = mimread(gif)
    assert len(frames) == result.episodes[0].steps + 1


def test_evaluate_counts_failures_of_a_bad_policy():
    class StayStill:
        resets = 0

        def reset(self):
            self.resets += 1

        def __call__(self, image, instruction, proprio):
            assert image.shape == (64, 64, 3) and isinstance(instruction, str) and proprio.shape == (7,)
            return np.zeros(7)

    policy = StayStill()
    result = evaluate(policy, "push/base", episodes=2, horizon=3, progress=False)
    assert result.successes == 0 and policy.resets == 2 and [e.steps for e in result.episodes] == [3, 3]


def test_evaluation_progress_moves_within_an_episode_and_the_result_is_not_logged_twice(capsys, caplog):
    import logging

    seen = []

    def still(image, instruction, proprio):
        seen.append(len(seen))
        return np.zeros(7)

    with caplog.at_level(logging.INFO, logger="robosteer.sim.evaluate"):
        result = evaluate(still, "push/base", episodes=2, horizon=4, progress=True)
    err = capsys.readouterr().err
    assert result.n == 2 and len(seen) == 8
    # the bar counts steps (8 = 2 episodes x horizon 4) and names the episode it is in
    assert "/8" in err and "episode 1/2" in err and "episode 2/2" in err
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "success" in r.getMessage()]


def test_policy_hook_and_cli_errors(capsys):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found: runs/no-such-policy"):
        load_policy("runs/no-such-policy")
    assert main(["evaluate", "--task", "juggle", "--episodes", "1"]) == 2
    assert "known: lift, place, push, stack" in capsys.readouterr().err
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "stack/base" in out and "axis=family" in out and "heldout" in out


def test_collect_demos_reuses_a_matching_folder_and_refuses_one_collected_otherwise(demos, monkeypatch):
    import robosteer.sim.collect as collect_module
    from robosteer.app.experiment import collect_demos

    def no_collection(*a, **kw):
        raise AssertionError("a complete folder with the same settings must be reused")

    monkeypatch.setattr(collect_module, "collect", no_collection)
    assert collect_demos("lift", 3, demos, seed=10, workers=2).num_episodes == 3  # workers do not change the data
    with pytest.raises(ValueError, match=r"other settings \(seed: 10 there, 0 wanted\)"):
        collect_demos("lift/base", 3, demos, seed=0)  # e.g. another study seed's demonstrations
    with pytest.raises(ValueError, match=r"tasks: \['lift/base'\] there, \['push/base'\] wanted; episodes: 3 there"):
        collect_demos("push/base", 20, demos, seed=10)

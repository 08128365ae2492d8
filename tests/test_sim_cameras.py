"""Several camera views per observation: the wrist camera in the env, the demo format, both loaders, videos."""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robosteer.cli import main
from robosteer.data.dataset import DemoDataset
from robosteer.data.demo_format import DemoFormatError
from robosteer.data.frames import ConcatFrames, Frame, check_frame
from robosteer.data.lerobot import LeRobotDataset
from robosteer.sim.collect import CollectConfig, collect
from robosteer.sim.env import SimConfig, make_env
from robosteer.sim.evaluate import evaluate
from robosteer.sim.expert import ScriptedExpert
from robosteer.sim.rollout import run_episode

TWO = ("agentview", "wrist")
# sha256 of images, proprio and actions of run_episode(env, "lift/base", 3, ScriptedExpert(), record=True, horizon=8)
# with SimConfig(image_size=64), computed with the code of commit 3fd4d93 (before camera views existed)
SINGLE_CAMERA_DIGEST = "cf9c8597cb04184bd0760ff642afc6be44d5c8b5ab3fcc80084b34971a44eefd"


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def env2():
    env = make_env(SimConfig(image_size=64, cameras=TWO))
    yield env
    env.close()


def test_config_names_views_main_first_and_wrist_camera_is_the_same_switch():
    assert SimConfig().cameras == ("agentview",) and not SimConfig().wrist_camera
    assert SimConfig(wrist_camera=True).cameras == TWO and SimConfig(cameras=TWO).wrist_camera
    assert SimConfig(wrist_camera=True) == SimConfig(cameras=TWO)
    for bad in ((), ("wrist",), ("agentview", "wrist", "wrist"), ("agentview", "top")):
        with pytest.raises(ValueError, match="SimConfig.cameras"):
            SimConfig(cameras=bad)
    assert CollectConfig(tasks=("lift",)).cameras is None  # one camera: nothing new in meta.json
    assert CollectConfig(tasks=("lift",), cameras=("agentview",)).cameras is None
    assert CollectConfig(tasks=("lift",), cameras=TWO).views == TWO
    with pytest.raises(ValueError, match="must start with 'agentview'"):
        CollectConfig(tasks=("lift",), cameras=("wrist",))


def test_single_camera_observation_is_bit_identical_to_before():
    env = make_env(SimConfig(image_size=64))
    try:
        ep = run_episode(env, "lift/base", 3, ScriptedExpert(), record=True, horizon=8)
    finally:
        env.close()
    assert ep.views == {} and _digest(ep.images, ep.proprio, ep.actions) == SINGLE_CAMERA_DIGEST
    obs = make_env(SimConfig(image_size=64)).reset_task("lift/base", 0)
    assert obs.views == {} and obs.wrist_image is None and len(obs.images) == 1 and obs.images[0] is obs.image


def test_two_cameras_give_both_views_the_wrist_one_moving_with_the_arm(env2):
    obs = env2.reset_task("lift/base", 0)
    assert list(obs.views) == list(TWO) and obs.views["agentview"] is obs.image and obs.views["wrist"] is obs.wrist_image
    for image in obs.images:
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    agent, wrist = (v.astype(int) for v in obs.images)
    assert np.abs(agent - wrist).mean() > 10  # a different view, not a copy
    single = make_env(SimConfig(image_size=64))
    try:
        assert np.array_equal(single.reset_task("lift/base", 0).image, obs.image)  # the main view is unchanged
    finally:
        single.close()
    for _ in range(5):
        moved = env2.act([0.8, 0.5, -0.5, 0, 0, 0, -1])
    assert np.abs(moved.views["wrist"].astype(int) - wrist).mean() > 5
    assert moved.side_by_side().shape == (64, 128, 3)


def test_policy_gets_every_view_and_the_video_shows_them_side_by_side(env2, tmp_path):
    seen = []

    def policy(image, instruction, proprio):
        seen.append(image)
        return np.zeros(7)

    result = evaluate(policy, "push/base", episodes=1, horizon=2, env=env2, video_dir=tmp_path, progress=False)
    assert all(isinstance(views, tuple) and len(views) == 2 and views[1].shape == (64, 64, 3) for views in seen)
    from imageio.v2 import mimread

    frames = mimread(result.episodes[0].video)
    assert len(frames) == 3 and frames[0].shape[:2] == (64, 128)


@pytest.fixture(scope="module")
def demos2(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos2") / "lift"
    assert main(["collect", "--task", "lift", "--episodes", "2", "--out", str(out), "--cameras", "agentview,wrist"]) == 0
    return out


def test_collect_with_two_cameras_writes_and_reads_back_both_views(demos2):
    meta = json.loads((demos2 / "meta.json").read_text())
    assert meta["cameras"] == list(TWO) and meta["collect_config"]["cameras"] == list(TWO)
    assert meta["format_version"] == 1 and meta["camera"] == "agentview"
    ds = DemoDataset(demos2)
    assert ds.cameras == TWO
    for e in range(ds.num_episodes):
        wrist = np.load(demos2 / f"images_wrist/episode_{e:06d}.npy")
        agent = np.load(demos2 / f"images/episode_{e:06d}.npy")
        assert wrist.shape == agent.shape and wrist.dtype == np.uint8 and not np.array_equal(wrist, agent)
        i = int(ds.episode_frames(e)[3])
        frame = ds[i]
        assert list(frame.views) == list(TWO) and frame.image is frame.images[0]
        assert np.array_equal(frame.images[0], agent[3]) and np.array_equal(frame.images[1], wrist[3])
        check_frame(frame, i, action_dim=7, proprio_dim=7)
    # the episodes are the single-camera collection's: same agentview images, actions and proprio
    env = make_env(SimConfig(image_size=64))
    try:
        ep = run_episode(env, "lift/base", ds.episode_rows[0]["seed"], ScriptedExpert(), record=True)
    finally:
        env.close()
    idx = ds.episode_frames(0)
    assert np.array_equal(ds.episode_images(0), ep.images) and np.array_equal(ds.actions[idx], ep.actions)
    batch = ds.batch([0, 1, 2])
    assert batch["views"]["wrist"].shape == (3, 64, 64, 3) and np.array_equal(batch["views"]["agentview"], batch["images"])
    both = ConcatFrames([ds, ds])
    assert both.cameras == TWO and list(both[len(ds)].views) == list(TWO)


def test_multi_camera_folder_errors_name_the_file(demos2, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(demos2, bad)
    (bad / "images_wrist" / "episode_000001.npy").unlink()
    ds = DemoDataset(bad)
    with pytest.raises(FileNotFoundError, match=r"images_wrist/episode_000001\.npy not found \(wrist images of episode 1\)"):
        ds[int(ds.episode_frames(1)[0])]
    meta = json.loads((bad / "meta.json").read_text())
    meta["cameras"] = "agentview"
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DemoFormatError, match=r"meta\.json: field 'cameras'"):
        DemoDataset(bad)


def test_single_camera_collection_is_unchanged(tmp_path):
    collect(CollectConfig(tasks=("lift/base",), episodes=1), tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert "cameras" not in meta and "cameras" not in meta["collect_config"]
    assert "counterfactual" not in meta["collect_config"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dataset_statistics.json", "episodes.parquet", "images", "meta.json", "steps.parquet"])
    ds = DemoDataset(tmp_path)
    frame = ds[0]
    assert ds.cameras == () and frame.views == {} and len(frame.images) == 1 and "views" not in ds.batch([0])


def test_frame_coerce_takes_views():
    views = {"agentview": np.zeros((8, 8, 3), np.uint8), "wrist": np.ones((8, 8, 3), np.uint8)}
    frame = Frame.coerce({"image": views["agentview"], "instruction": "x", "action": np.zeros(7), "views": views})
    assert [v.max() for v in frame.images] == [0, 1]
    with pytest.raises(ValueError, match="view 'wrist' must be uint8"):
        check_frame(Frame.coerce({**frame.__dict__, "views": {**views, "wrist": np.zeros((8, 8))}}), 0, 7, 0)


def _png(rgb):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _write_two_view_lerobot(root):
    rng = np.random.default_rng(1)
    feature = {"dtype": "image", "shape": [16, 16, 3], "names": ["height", "width", "channel"]}
    info = {"codebase_version": "v2.1", "fps": 10, "chunks_size": 1000,
            "features": {"observation.images.image": feature, "observation.images.wrist_image": feature,
                         "observation.state": {"dtype": "float32", "shape": [8]},
                         "action": {"dtype": "float32", "shape": [7]}}}
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "pick up the red cube"}))
    (root / "data" / "chunk-000").mkdir(parents=True)
    views = {k: [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(4)] for k in ("image", "wrist_image")}
    columns = {
        "observation.state": [list(rng.normal(size=8)) for _ in range(4)],
        "action": [[*rng.uniform(-1, 1, 6), g] for g in (-1, -1, 1, 1)],
        "episode_index": [0] * 4, "frame_index": list(range(4)), "task_index": [0] * 4,
        **{f"observation.images.{k}": [{"bytes": _png(f), "path": None} for f in v] for k, v in views.items()},
    }
    pq.write_table(pa.table(columns), root / "data" / "chunk-000" / "episode_000000.parquet")
    return views


def test_lerobot_folder_with_two_image_features_loads_both(tmp_path):
    views = _write_two_view_lerobot(tmp_path)
    one = LeRobotDataset(tmp_path)  # as before: the first image feature only
    assert one.cameras == () and one[2].views == {} and np.array_equal(one[2].image, views["image"][2])
    ds = LeRobotDataset(tmp_path, image_keys="all")
    assert ds.cameras == ("image", "wrist_image")
    frame = ds[2]
    assert list(frame.views) == ["image", "wrist_image"] and frame.image is frame.images[0]
    assert np.array_equal(frame.images[0], views["image"][2]) and np.array_equal(frame.images[1], views["wrist_image"][2])
    flipped = LeRobotDataset(tmp_path, image_keys=("observation.images.wrist_image", "observation.images.image"))
    assert flipped.cameras == ("wrist_image", "image") and np.array_equal(flipped[1].image, views["wrist_image"][1])
    with pytest.raises(ValueError, match="image_keys .* must be distinct image features"):
        LeRobotDataset(tmp_path, image_keys=("observation.images.image", "observation.state"))
    with pytest.raises(ValueError, match="not both"):
        LeRobotDataset(tmp_path, image_key="observation.images.image", image_keys="all")

"""``data.folders``: one opener for demo folders (robosteer or LeRobot), and the first-episodes view."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from robosteer.data.dataset import DemoDataset  # noqa: E402
from robosteer.data.folders import EpisodeSubset, first_episodes, open_demos  # noqa: E402
from robosteer.data.lerobot import LeRobotDataset  # noqa: E402

from .test_sim_data import _write_lerobot  # noqa: E402


def _write_demos(root, lengths=(3, 4, 2)):
    from robosteer.data.demo_format import DemoWriter
    from robosteer.sim.rollout import Episode
    from robosteer.sim.tasks import Task

    rng = np.random.default_rng(0)
    with DemoWriter(root, image_size=8) as writer:
        for seed, t in enumerate(lengths):
            writer.add(Episode(task=Task.parse("lift"), seed=seed, instruction="lift the red cube", success=True,
                               length=t, images=rng.integers(0, 256, (t, 8, 8, 3), dtype=np.uint8),
                               proprio=rng.uniform(-1, 1, (t, 7)).astype(np.float32),
                               actions=rng.uniform(-1, 1, (t, 7)).astype(np.float32)))
    return root


def test_open_demos_chooses_the_loader_by_what_the_folder_holds(tmp_path):
    demos = open_demos(_write_demos(tmp_path / "demos"))
    assert type(demos) is DemoDataset and len(demos) == 9
    _write_lerobot(tmp_path / "lerobot")
    lerobot = open_demos(str(tmp_path / "lerobot"))
    assert type(lerobot) is LeRobotDataset and len(lerobot) == 7


def test_open_demos_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"demonstration folder not found: .*nowhere"):
        open_demos(tmp_path / "nowhere")


def test_first_episodes_keeps_the_frames_of_the_lowest_episode_ids(tmp_path):
    demos = open_demos(_write_demos(tmp_path / "demos"))
    few = first_episodes(demos, 2)
    assert isinstance(few, EpisodeSubset) and len(few) == 7
    assert few.indices == [int(i) for i in np.flatnonzero(np.isin(demos.episode_index, [0, 1]))]
    assert few.tasks == [demos.tasks[i] for i in few.indices]
    assert np.array_equal(few.image(6), demos.image(few.indices[6])) and few[0].step == demos[few.indices[0]].step

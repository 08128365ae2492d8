"""Action chunks: each frame's next K actions within its episode, the last one repeated at the end."""

from __future__ import annotations

import numpy as np
import pytest

from robosteer.data.chunks import ActionChunks, chunk_indices
from robosteer.data.frames import ConcatFrames, FrameDataset
from robosteer.data.keyframes import KEYFRAME_NAMES


class Tiny(FrameDataset):
    """Two episodes (3 and 2 steps), frames stored out of order; action[i] = [episode, step, ...]."""

    def __init__(self, size: int = 16) -> None:
        episode, step = np.array([1, 0, 0, 1, 0]), np.array([1, 2, 0, 0, 1])
        action = np.zeros((5, 7), dtype=np.float32)
        action[:, 0], action[:, 1] = episode, step
        super().__init__(episode=episode, step=step, action=action, proprio=np.zeros((5, 7)),
                         keyframes={k: np.zeros(5, bool) for k in KEYFRAME_NAMES},
                         instructions=["pick up the red cube"] * 5, tasks=["lift/base"] * 5)
        self.size = size

    def image(self, i: int) -> np.ndarray:
        return np.full((self.size, self.size, 3), i, dtype=np.uint8)


def test_chunk_indices_follow_the_episode_and_pad_with_its_last_step():
    ds = Tiny()
    index = chunk_indices(ds.episode_index, ds.step_index, 3)
    # frame 2 is episode 0 step 0: then step 1 (frame 4), step 2 (frame 1)
    assert index[2].tolist() == [2, 4, 1]
    assert index[4].tolist() == [4, 1, 1]  # step 1 of 3: the last step repeats
    assert index[3].tolist() == [3, 0, 0]  # episode 1: step 0, step 1, then its last again
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        chunk_indices(ds.episode_index, ds.step_index, 0)


def test_action_chunks_give_each_frame_its_next_actions():
    chunks = ActionChunks(Tiny(), chunk=2)
    frame = chunks[2]
    assert frame.action.shape == (2, 7)
    assert frame.action[:, :2].tolist() == [[0, 0], [0, 1]]  # (episode, step) of the two actions
    assert np.array_equal(frame.image, Tiny()[2].image) and frame.step == 0
    assert np.array_equal(ActionChunks(Tiny(), chunk=1).actions[:, 0], Tiny().actions)


def test_chunks_of_concatenated_datasets_stay_within_episodes():
    both = ActionChunks(ConcatFrames([Tiny(), Tiny()]), chunk=4)
    assert len(both) == 10
    episodes = both.episode_index[both.index]  # (N, K): every chunk's frames come from the frame's own episode
    assert (episodes == both.episode_index[:, None]).all()


def test_a_chunking_model_trains_on_action_chunks(tmp_path):
    import torch

    from robosteer.models.loading import build_vla_from_config
    from robosteer.train import TrainConfig, train
    from robosteer.train.strategies import make_strategy

    from .train_helpers import tiny_train_vla

    torch.set_num_threads(1)
    base = tiny_train_vla()
    vla = build_vla_from_config(base.config.replace(action_head="l1-regression", action_chunk=4),
                                tokenizer=base.tokenizer, seed=0)
    result = train(vla, ActionChunks(Tiny(), chunk=4), make_strategy("full"),
                   TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=2, log_every=1, ckpt_every=2, progress=False))
    assert result.finished and np.isfinite(result.loss)
    with pytest.raises(ValueError, match=r"chunks of 4 actions.*ActionChunks\(dataset, 4\)"):  # single-step frames
        train(vla, Tiny(), make_strategy("full"), TrainConfig(out_dir=str(tmp_path / "b"), steps=1, batch_size=2,
                                                              progress=False))

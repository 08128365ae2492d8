"""Recording head activations over demonstration frames."""

import numpy as np
import pytest
import torch

from robosteer.circuits.record import HeadActivations, RecordConfig, record_heads
from robosteer.models.sequence import SequenceBuilder
from robosteer.models.tiny import tiny_vla


@pytest.fixture(scope="module")
def setup():
    vla = tiny_vla(seed=7, proprio_dim=7)
    rng = np.random.default_rng(0)
    frames = []
    for ep in range(3):
        for step in range(5):
            frames.append({"image": rng.integers(0, 256, (28, 28, 3), dtype=np.uint8),
                           "instruction": ["pick up the red cube", "lift the green ball now"][ep % 2],
                           "action": rng.uniform(-0.9, 0.9, 7), "proprio": rng.uniform(-1, 1, 7),
                           "episode": ep, "step": step, "keyframe": step in (0, 2, 4)})
    return vla, frames


def test_positions_index_the_right_tokens(setup):
    vla, frames = setup
    tb = SequenceBuilder(vla).build(frames[:2])
    ids = tb.input_ids
    out = vla(**tb.model_inputs())
    for b in range(2):
        first = tb.first_action[b].item()
        prompt_len = first - (vla.n_prefix - 1)
        assert ids[b, prompt_len - 1].item() == vla.config.prompt_suffix_token_id
        assert vla.action_tokenizer.is_action(ids[b, prompt_len : prompt_len + 7]).all()
    assert out.logits.shape[1] == vla.n_prefix - 1 + ids.shape[1]


@pytest.mark.parametrize("position", ["first_action", "last_prompt", "mean_action"])
def test_record_matches_single_frame_cache(setup, position):
    vla, frames = setup
    acts = record_heads(vla, frames, RecordConfig(towers=("llm", "dino"), position=position, batch_size=4), progress=False)
    assert len(acts) == 9 and acts.acts["llm"].shape == (9, 2, 4, 8)
    assert acts.acts["dino"].shape == (9, 2, 4, 12)  # the tower's last block never runs
    assert acts.episodes.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and acts.frames.tolist() == [0, 2, 4] * 3
    # frame 5 of the keyframes, recorded alone (no padding), gives the same values
    single = SequenceBuilder(vla).build([frames[7]])
    _, cache = vla.run_with_cache(**single.model_inputs(), names_filter="llm.blocks.1.attn.hook_z")
    first = single.first_action[0]
    z = cache["llm.blocks.1.attn.hook_z"][0]
    expected = {"first_action": z[first], "last_prompt": z[first - 1], "mean_action": z[first : first + 7].mean(0)}[position]
    assert torch.allclose(acts.acts["llm"][4, 1], expected, atol=1e-5)


def test_save_load_round_trip(setup, tmp_path):
    vla, frames = setup
    acts = record_heads(vla, frames, RecordConfig(keyframes_only=False), progress=False)
    assert len(acts) == 15
    acts.save(tmp_path / "acts")
    again = HeadActivations.load(tmp_path / "acts")
    assert torch.equal(again.acts["llm"], acts.acts["llm"]) and np.array_equal(again.actions, acts.actions)
    assert again.layout == acts.layout and again.fingerprint == vla.fingerprint()
    scores = again.knn_scores()
    assert len(scores.heads) == 8


def test_record_errors(setup):
    vla, frames = setup
    with pytest.raises(ValueError, match=r"unknown tower\(s\) \['vit'\]"):
        record_heads(vla, frames, RecordConfig(towers=("vit",)), progress=False)
    with pytest.raises(ValueError, match="position must be one of"):
        RecordConfig(position="cls")


def test_vision_heads_of_a_two_view_model_are_recorded_once_per_frame():
    """A two-camera model's towers see B * V images; the recording keeps one row per frame (mean over views)."""
    from .test_sequence import oft_frames, tiny_oft

    vla, frames = tiny_oft(chunk=2), oft_frames(3, chunk=2)
    for f in frames:
        f.update(episode=0, step=0, keyframe=True)
    acts = record_heads(vla, frames, RecordConfig(towers=("llm", "dino")), progress=False)
    assert acts.acts["dino"].shape[0] == 3 and acts.acts["llm"].shape[0] == 3
    other = [dict(f, views={"agentview": f["views"]["agentview"], "wrist": 255 - f["views"]["wrist"]}) for f in frames]
    again = record_heads(vla, other, RecordConfig(towers=("dino",)), progress=False)
    assert not torch.allclose(acts.acts["dino"], again.acts["dino"])  # the wrist view is part of the recording

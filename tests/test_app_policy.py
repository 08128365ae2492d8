"""The closed-loop policy callable: one forward pass per step for token models, chunks run open loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robosteer.app.policy import VLAPolicy

from .train_helpers import tiny_train_vla


def chunk_vla(chunk: int):
    from robosteer.models.loading import build_vla_from_config

    vla = tiny_train_vla()
    cfg = vla.config.replace(action_head="l1-regression", action_chunk=chunk)
    return build_vla_from_config(cfg, tokenizer=vla.tokenizer, seed=1).eval()


def observation(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "pick up the red cube", rng.uniform(-1, 1, 7)


def test_a_chunk_runs_open_loop_then_the_next_is_predicted():
    torch.manual_seed(0)
    vla = chunk_vla(3)
    image, text, proprio = observation()
    expected = np.asarray(vla.predict_action(image, text, proprio=proprio), dtype=np.float32)  # (3, 7)
    policy = VLAPolicy(vla)
    got = [policy(image, text, proprio) for _ in range(4)]
    assert policy.forward_passes == 2  # steps 0-2 from the first chunk, step 3 starts the next
    np.testing.assert_array_equal(np.stack(got[:3]), expected)
    np.testing.assert_array_equal(got[3], expected[0])  # the same observation gives the same chunk again
    policy.reset()  # a new episode drops the rest of the chunk (two actions of the second one are left)
    policy(image, text, proprio)
    assert policy.forward_passes == 3


def test_execute_limits_the_open_loop_part():
    policy = VLAPolicy(chunk_vla(3), execute=1)
    image, text, proprio = observation()
    for _ in range(3):
        assert policy(image, text, proprio).shape == (7,)
    assert policy.forward_passes == 3
    with pytest.raises(ValueError, match="execute=4: the policy predicts chunks of 3"):
        VLAPolicy(chunk_vla(3), execute=4)


def test_temporal_ensembling_averages_every_chunks_prediction_for_the_step():
    torch.manual_seed(0)
    vla, m = chunk_vla(3), 0.5
    observations = [observation(seed) for seed in range(4)]  # a different observation each step
    chunks = [np.asarray(vla.predict_action(im, tx, proprio=pr), dtype=np.float32) for im, tx, pr in observations]
    policy = VLAPolicy(vla, ensemble=m)
    got = [policy(*obs) for obs in observations]
    assert policy.forward_passes == 4  # one chunk per step
    for t in range(4):  # chunk s predicts step t at its index t - s; the oldest weighs exp(0)
        preds = [chunks[s][t - s] for s in range(max(0, t - 2), t + 1)]
        w = np.exp(-m * np.arange(len(preds)))
        np.testing.assert_allclose(got[t], (w[:, None] * np.stack(preds)).sum(0) / w.sum(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[2], chunks[2][0])  # the average differs from the newest chunk alone
    policy.reset()  # a new episode starts from its own chunk only
    np.testing.assert_array_equal(policy(*observations[0]), chunks[0][0])
    with pytest.raises(ValueError, match="not both"):
        VLAPolicy(chunk_vla(3), execute=1, ensemble=0.01)


def test_a_token_model_predicts_every_step():
    policy = VLAPolicy(tiny_train_vla())
    image, text, proprio = observation()
    assert policy(image, text, proprio).shape == (7,) and policy(image, text, proprio).shape == (7,)
    assert policy.forward_passes == 2


def test_a_two_view_policy_takes_the_simulators_tuple_of_views():
    from robosteer.models.loading import build_vla_from_config

    base = tiny_train_vla()
    vla = build_vla_from_config(base.config.replace(n_views=2, action_head="l1-regression", action_chunk=2),
                                tokenizer=base.tokenizer, seed=2).eval()
    image, text, proprio = observation()
    wrist = 255 - image
    action = VLAPolicy(vla)((image, wrist), text, proprio)
    expected = np.asarray(vla.predict_action([image, wrist], text, proprio=proprio), dtype=np.float32)[0]
    np.testing.assert_array_equal(action, expected)
    with pytest.raises(ValueError, match="gives 1 camera view.*takes 2"):
        VLAPolicy(vla)(image, text, proprio)
    with pytest.raises(ValueError, match="gives 2 camera view.*takes 1"):
        VLAPolicy(tiny_train_vla())((image, wrist), text, proprio)


def test_policy_help_names_every_kind_of_policy():
    import contextlib
    import io

    import pytest

    from robosteer.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    text = " ".join(out.getvalue().split())
    assert "'default' (the embedded policy)" in text and "'expert'" in text and "policy.json" in text

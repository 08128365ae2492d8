"""Pretraining's auxiliary state targets: targets, gradients, resumption, and a plain policy afterwards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robosteer.train import TrainConfig, train
from robosteer.train.auxiliary import HEAD, SCALE, StateTargets
from robosteer.train.batches import BatchBuilder
from robosteer.train.strategies import FullStrategy

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)


def frames_with_state(n: int = 6) -> list[dict]:
    frames = make_frames(n)
    rng = np.random.default_rng(1)
    for f in frames:
        f["state"] = rng.uniform(-1, 1, 6).astype(np.float32)
    return frames


def test_targets_are_positions_relative_to_the_gripper_in_decimetres():
    vla = tiny_train_vla()
    frames = frames_with_state(2)
    aux = StateTargets(vla)
    got = aux.targets(frames).numpy()
    for row, f in zip(got, frames):
        eef = np.asarray(f["proprio"])[:3]
        np.testing.assert_allclose(row, (np.asarray(f["state"], dtype=np.float64) - np.r_[eef, eef]) * SCALE, rtol=1e-6)


def test_frames_without_state_are_refused_by_name():
    vla = tiny_train_vla()
    with pytest.raises(ValueError, match="frame 0 has no privileged 'state'"):
        StateTargets(vla).targets(make_frames(2))


def test_the_loss_reaches_the_vision_towers_and_the_read_out():
    vla = tiny_train_vla()
    frames = frames_with_state(4)
    batch = BatchBuilder(vla).collate(frames)
    with StateTargets.attached(vla) as aux:
        vla(**batch.model_inputs())
        loss = aux(frames, batch)
    loss.backward()
    assert loss.item() > 0
    assert getattr(vla, HEAD).weight.grad.abs().sum() > 0
    patch = next(p for n, p in vla.named_parameters() if "featurizer" in n and "patch_embed" in n)
    assert patch.grad is not None and patch.grad.abs().sum() > 0
    # outside the block no hook is left behind: a forward no longer feeds the objective
    vla(**batch.model_inputs())
    with pytest.raises(RuntimeError, match="saw no forward pass"):
        aux(frames, batch)


def run(out, stop_after=None):
    vla = tiny_train_vla()
    cfg = TrainConfig(out_dir=str(out), steps=2, batch_size=4, lr=3e-3, warmup_steps=1, ckpt_every=1, log_every=1,
                      progress=False, augment=False)
    with StateTargets.attached(vla, weight=0.5) as aux:
        result = train(vla, frames_with_state(6), FullStrategy(), cfg, stop_after=stop_after, auxiliary=aux)
    return vla, result


def test_training_with_the_objective_resumes_bit_exactly_and_logs_it(tmp_path):
    straight, done = run(tmp_path / "straight")
    run(tmp_path / "resumed", stop_after=1)
    resumed, second = run(tmp_path / "resumed")
    assert second.resumed_from is not None and second.loss == done.loss
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    straight_rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["aux_loss"] for r in rows] == [r["aux_loss"] for r in straight_rows] and rows[0]["aux_loss"] > 0
    header = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith(",aux_loss")


def test_detach_leaves_a_plain_policy(tmp_path):
    vla, _ = run(tmp_path / "run")
    assert hasattr(vla, HEAD)
    StateTargets.detach(vla)
    assert not any(HEAD in name for name in vla.state_dict())
    vla.save_pretrained(tmp_path / "plain")
    from robosteer.models import load_vla

    loaded = load_vla(tmp_path / "plain")
    assert loaded.fingerprint() == vla.fingerprint()

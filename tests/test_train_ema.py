"""The weight average (TrainConfig.ema_decay): its rule, the saved output, checkpoints and resumption."""

from __future__ import annotations

import pytest
import torch

from robosteer.train import TrainConfig, train
from robosteer.train.ema import WeightAverage, warmed_decay
from robosteer.train.strategies import make_strategy, trainable_parameters

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)

DECAY = 0.9


def run(out, ema_decay=0.0, stop_after=None, steps=3):
    vla = tiny_train_vla()
    cfg = TrainConfig(out_dir=str(out), steps=steps, batch_size=4, lr=3e-3, schedule="cosine", warmup_steps=1,
                      ckpt_every=1, log_every=1, progress=False, augment=True, ema_decay=ema_decay)
    return vla, train(vla, make_frames(6), make_strategy("full"), cfg, stop_after=stop_after)


def saved_weights(final):
    from safetensors.torch import load_file

    return {k: v for f in sorted(final.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_the_rule_warms_the_decay_up():
    p = torch.nn.Parameter(torch.zeros(2))
    ema = WeightAverage([("w", p)], decay=0.99)
    expected = torch.zeros(2)
    for step, value in enumerate([1.0, 2.0, 4.0], start=1):
        p.data.fill_(value)
        ema.update(step)
        d = min(0.99, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * value
    assert warmed_decay(0.99, 1) == pytest.approx(2 / 11)
    torch.testing.assert_close(ema.average["w"], expected)
    with ema.applied():
        torch.testing.assert_close(p.data, expected)
    assert torch.equal(p.data, torch.full((2,), 4.0))  # the training weights come back
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage([("w", p)], decay=1.0)


def test_the_final_output_is_the_average_of_the_steps_weights(tmp_path):
    # the average does not change training: the weights after each step of a run without it are the ones to average
    names = [n for n, _ in trainable_parameters(tiny_train_vla())]
    snapshots = [dict((n, p.detach().clone()) for n, p in trainable_parameters(tiny_train_vla()))]
    for k in (1, 2, 3):
        vla, _ = run(tmp_path / f"plain-{k}", stop_after=k, steps=3)
        snapshots.append({n: p.detach().clone() for n, p in trainable_parameters(vla)})
    expected = dict(snapshots[0])
    for step in (1, 2, 3):
        d = warmed_decay(DECAY, step)
        expected = {n: d * expected[n] + (1 - d) * snapshots[step][n] for n in names}

    vla, result = run(tmp_path / "ema", ema_decay=DECAY)
    assert all(torch.equal(p, snapshots[3][n]) for n, p in trainable_parameters(vla))  # training weights kept in memory
    saved = saved_weights(result.output)
    compared = [n for n in names if n in saved]
    assert len(compared) > 10
    for n in compared:
        torch.testing.assert_close(saved[n], expected[n], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(saved[n], snapshots[3][n]) for n in compared)  # it is not the last step's weights
    assert (result.checkpoint / "ema.safetensors").is_file()


def test_a_resumed_run_with_the_average_is_bit_exact(tmp_path):
    _, straight = run(tmp_path / "straight", ema_decay=DECAY)
    _, first = run(tmp_path / "resumed", ema_decay=DECAY, stop_after=1)
    assert not first.finished
    _, second = run(tmp_path / "resumed", ema_decay=DECAY)
    assert second.resumed_from is not None and second.finished
    a, b = saved_weights(straight.output), saved_weights(second.output)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_needs_the_same_decay_and_its_file(tmp_path):
    run(tmp_path, stop_after=1)
    with pytest.raises(ValueError, match="cannot resume.*ema_decay=0.0 vs 0.9"):
        run(tmp_path, ema_decay=DECAY)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig(out_dir="x", ema_decay=1.5)

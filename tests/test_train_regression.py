"""Training a continuous-action (L1 regression head) model with the same loop: loss, resume, strategies."""

from __future__ import annotations

import pytest
import torch

from robosteer.masks import HeadMask
from robosteer.models.action_heads import l1_action_loss
from robosteer.models.sequence import SequenceBuilder
from robosteer.train import TrainConfig, train
from robosteer.train.strategies import make_strategy, trainable_parameters

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)

HEADS = ["llm.L0H1", "llm.L1H2"]


def l1_vla(seed: int = 0):
    """The tiny training model with one-step continuous actions (OFT's L1 head, K = 1, one camera)."""
    vla = tiny_train_vla(seed)
    cfg = vla.config.replace(action_head="l1-regression", action_chunk=1, normalization="bounds_q99")
    from robosteer.models.loading import build_vla_from_config

    return build_vla_from_config(cfg, tokenizer=vla.tokenizer, seed=seed).eval()


def run(method, out, steps=2, **overrides):
    vla = l1_vla()
    mask = HeadMask.from_heads(HEADS, vla.head_layout)
    cfg = dict(out_dir=str(out), steps=steps, batch_size=4, lr=3e-3, schedule="cosine", warmup_steps=1,
               ckpt_every=1, log_every=1, progress=False, augment=True)
    stop_after = overrides.pop("stop_after", None)
    cfg.update(overrides)
    result = train(vla, make_frames(6), make_strategy(method, mask=mask), TrainConfig(**cfg), stop_after=stop_after)
    return vla, result


@pytest.mark.parametrize("method", ["full", "heads"])
def test_l1_training_resumes_bit_exactly(tmp_path, method):
    straight, done = run(method, tmp_path / "straight")
    _, first = run(method, tmp_path / "resumed", stop_after=1)
    assert first.step == 1 and not first.finished
    resumed, second = run(method, tmp_path / "resumed")
    assert second.resumed_from is not None and second.loss == done.loss
    a, b = dict(trainable_parameters(straight)), dict(trainable_parameters(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if method == "full":
        assert any(k.startswith("action_head.") for k in a)  # the regression head trains with the model


def test_the_logged_loss_is_the_mean_absolute_error(tmp_path):
    frames = make_frames(6)
    with torch.no_grad():  # a batch of all 6 frames: the mean does not depend on the order the loop draws them in
        expected = float(l1_action_loss(l1_vla(), SequenceBuilder(l1_vla(), eos=True).build(frames)))
    _, result = run("full", tmp_path / "one", steps=1, batch_size=6, augment=False, warmup_steps=0)
    assert result.loss == pytest.approx(expected, rel=1e-6)


def test_l1_loss_falls_when_training(tmp_path):
    _, short = run("full", tmp_path / "a", steps=1, batch_size=6, augment=False, warmup_steps=0)
    _, long = run("full", tmp_path / "b", steps=60, batch_size=6, augment=False, schedule="constant", warmup_steps=0)
    assert long.loss < 0.5 * short.loss


def test_label_smoothing_is_refused_for_continuous_actions(tmp_path):
    with pytest.raises(ValueError, match="label_smoothing=0.5 smooths action-token targets"):
        run("full", tmp_path / "x", label_smoothing=0.5)

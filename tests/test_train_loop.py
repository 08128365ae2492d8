"""The training loop: exact resumption, the non-finite-loss stop, checkpoints, metrics and config checks."""

from __future__ import annotations

import json

import pytest
import torch

from robosteer.masks import HeadMask
from robosteer.train import NonFiniteLossError, TrainConfig, train
from robosteer.train.config import lr_factor
from robosteer.train.state import latest_checkpoint
from robosteer.train.strategies import LoraSettings, make_strategy, trainable_parameters

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)

HEADS = ["llm.L0H1", "llm.L1H2", "dino.L1H1", "siglip.L0H0"]
METHODS = [("full", {}), ("heads", {"kv": True}), ("random-heads", {}), ("lora", {"lora": LoraSettings(r=4, dropout=0.1)})]


def run(method, kwargs, out, **overrides):
    vla = tiny_train_vla()
    mask = HeadMask.from_heads(HEADS, vla.head_layout)
    cfg = dict(out_dir=str(out), steps=2, batch_size=4, lr=3e-3, schedule="cosine", warmup_steps=1, ckpt_every=1,
               log_every=1, progress=False, augment=True, label_smoothing=0.5)
    stop_after = overrides.pop("stop_after", None)
    cfg.update(overrides)
    result = train(vla, make_frames(6), make_strategy(method, mask=mask, **kwargs), TrainConfig(**cfg),
                   stop_after=stop_after)
    return vla, result


@pytest.mark.parametrize("method, kwargs", METHODS, ids=[m for m, _ in METHODS])
def test_resume_is_bit_exact(tmp_path, method, kwargs):
    straight, done = run(method, kwargs, tmp_path / "straight")
    _, first = run(method, kwargs, tmp_path / "resumed", stop_after=1)
    assert first.step == 1 and not first.finished and first.output is None
    resumed, second = run(method, kwargs, tmp_path / "resumed")
    assert second.resumed_from is not None and second.resumed_from.name == "step-0000001" and second.finished
    assert second.loss == done.loss
    a, b = dict(trainable_parameters(straight)), dict(trainable_parameters(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(straight.state_dict().values(), resumed.state_dict().values()))
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    straight_rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert [(r["loss"], r["lr"], r["grad_norm"]) for r in rows] == [(r["loss"], r["lr"], r["grad_norm"])
                                                                      for r in straight_rows]


def test_training_time_counts_the_steps_before_a_resume(tmp_path):
    _, first = run("heads", {}, tmp_path, stop_after=1)
    assert first.start_step == 0 and first.elapsed_s > 0
    _, second = run("heads", {}, tmp_path)
    assert second.start_step == 1 and second.elapsed_s > first.elapsed_s
    saved = json.loads((second.checkpoint / "state.json").read_text())
    assert second.elapsed_s == saved["elapsed_s"]
    # a call that finds the run finished does no step and still reports the run's training time, not ~0
    _, again = run("heads", {}, tmp_path)
    assert again.start_step == 2 and again.elapsed_s == second.elapsed_s and again.finished


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    vla = tiny_train_vla()
    calls = {"n": 0}

    def poison(module, inputs, output):  # the 3rd training forward returns NaN logits
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 3 else output

    vla.language_model.lm_head.register_forward_hook(poison)
    cfg = TrainConfig(out_dir=str(tmp_path), steps=5, batch_size=2, ckpt_every=2, progress=False)
    strategy = make_strategy("heads", mask=HeadMask.from_heads(HEADS, vla.head_layout))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 3.*step-0000002"):
        train(vla, make_frames(6), strategy, cfg)
    good = latest_checkpoint(tmp_path / "checkpoints")
    assert good is not None and good.name == "step-0000002"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000002"]
    assert not (tmp_path / "final").exists()
    saved = json.loads((good / "state.json").read_text())
    assert saved["step"] == 2
    # the weights were not touched by the failed step: they equal what the checkpoint holds
    from safetensors.torch import load_file

    ckpt = load_file(str(good / "trainable.safetensors"))
    assert all(torch.equal(ckpt[n], p) for n, p in trainable_parameters(vla))


def test_resume_refuses_a_different_run(tmp_path):
    run("heads", {}, tmp_path, stop_after=1)
    with pytest.raises(ValueError, match="cannot resume.*seed=0 vs 1"):
        run("heads", {}, tmp_path, seed=1)
    with pytest.raises(ValueError, match="cannot resume.*strategy"):
        run("full", {}, tmp_path)


def test_checkpoints_are_pruned_and_csv_written(tmp_path):
    run("heads", {}, tmp_path, steps=3, keep_checkpoints=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,loss,lr,grad_norm,tokens_per_s,elapsed_s" and len(lines) == 4
    assert not any(p.suffix in (".pt", ".bin", ".pkl") for p in tmp_path.rglob("*"))


def test_lr_schedule_shapes():
    cfg = TrainConfig(out_dir="x", steps=11, schedule="cosine", warmup_steps=2, min_lr_ratio=0.1)
    factors = [lr_factor(cfg, s) for s in range(11)]
    assert factors[0] == 0.5 and factors[1] == 1.0 and factors[2] == 1.0
    assert factors[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(factors[2:], factors[3:]))
    assert all(lr_factor(TrainConfig(out_dir="x", steps=5), s) == 1.0 for s in range(5))


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps"), ("lr", float("nan"), "lr"), ("schedule", "linear", "schedule"),
    ("warmup_steps", -1, "warmup_steps"), ("betas", (0.9, 1.0), "betas"), ("grad_clip", 0, "grad_clip"),
    ("mixed_precision", "fp8", "mixed_precision"), ("keep_checkpoints", 0, "keep_checkpoints"),
    ("augment_shift", -1, "augment_shift"), ("augment_shift", 0.5, "augment_shift"),
])
def test_train_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(out_dir="x", **{field: value})

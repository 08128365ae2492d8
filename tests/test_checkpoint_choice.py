"""Closed-loop checkpoint choice (app/checkpoint_choice.py): the best checkpoint on validation seeds is shipped."""

from __future__ import annotations

import json

import pytest
import torch

from robosteer.train import TrainConfig, train
from robosteer.train.strategies import make_strategy

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("choice")
    cfg = TrainConfig(out_dir=str(out), steps=3, batch_size=4, lr=3e-3, schedule="cosine", warmup_steps=1,
                      ckpt_every=1, keep_checkpoints=3, log_every=1, progress=False, ema_decay=0.5)
    result = train(tiny_train_vla(), make_frames(6), make_strategy("full"), cfg)
    return out, result.output


def fake_success(monkeypatch, by_step: dict[int, int], seen: list):
    """measure_policy stand-in: each checkpoint's policy 'succeeds' by_step[step] of its episodes per task."""
    import robosteer.sim.collect as collect
    from robosteer.sim.evaluate import EpisodeRecord, EvalResult

    def measure(factory, tasks, *, episodes, seed, workers, config, progress):
        step = int(factory.spec.rstrip("/").split("-")[-1])
        seen.append((step, seed, episodes))
        return {t: EvalResult(t, [EpisodeRecord(seed + i, "", i < by_step[step], 1) for i in range(episodes)])
                for t in tasks}
    monkeypatch.setattr(collect, "measure_policy", measure)


def test_the_best_checkpoint_on_validation_seeds_is_shipped_with_its_averaged_weights(run, monkeypatch, tmp_path):
    from safetensors.torch import load_file

    from robosteer.app.checkpoint_choice import CHOICE_FILE, choose_checkpoint
    from robosteer.models import load_vla
    from robosteer.sim.tasks import EVAL_SEED, VALIDATION_SEED

    out, final = run
    seen = []
    fake_success(monkeypatch, {1: 1, 2: 3, 3: 2}, seen)
    chosen, table = choose_checkpoint(out / "checkpoints", final, ["lift/base", "push/base"], out=tmp_path / "chosen",
                                      last=3, episodes=4)
    assert [r["step"] for r in table] == [1, 2, 3] and [r["mean"] for r in table] == [0.25, 0.75, 0.5]
    assert {s for _, s, _ in seen} == {VALIDATION_SEED} and VALIDATION_SEED != EVAL_SEED
    record = json.loads((tmp_path / CHOICE_FILE).read_text())
    assert record["chosen"] == "step-0000002" and record["validation_seed"] == VALIDATION_SEED
    average = load_file(str(out / "checkpoints" / "step-0000002" / "ema.safetensors"))
    shipped = load_vla(chosen, dtype=torch.float32).state_dict()
    name = next(iter(average))
    assert torch.equal(shipped[name], average[name])  # step 2's weight average, not the final weights
    assert not torch.equal(shipped[name], load_vla(final, dtype=torch.float32).state_dict()[name])
    # the same choice again is read back, not re-evaluated
    seen.clear()
    assert choose_checkpoint(out / "checkpoints", final, ["lift/base", "push/base"], out=tmp_path / "chosen",
                             last=3, episodes=4)[1] == table and not seen


def test_ties_go_to_the_later_checkpoint_and_only_the_newest_are_compared(run, monkeypatch, tmp_path):
    from robosteer.app.checkpoint_choice import choose_checkpoint

    out, final = run
    seen = []
    fake_success(monkeypatch, {1: 4, 2: 2, 3: 2}, seen)
    _, table = choose_checkpoint(out / "checkpoints", final, ["lift/base"], out=tmp_path / "c", last=2, episodes=4)
    assert [r["step"] for r in table] == [2, 3]  # step 1 (the best) is not among the newest two
    assert json.loads((tmp_path / "checkpoint_choice.json").read_text())["chosen"] == "step-0000003"
    with pytest.raises(ValueError, match="holds no step-\\* checkpoints"):
        choose_checkpoint(tmp_path / "nothing", final, ["lift/base"], out=tmp_path / "d")

"""Finetuning pi0: chosen heads only (base weights bit-identical), exact resumption, LoRA through peft, saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import robosteer
from robosteer.interventions import active_heads
from robosteer.masks import HeadMask
from robosteer.models.pi0 import tiny_pi0
from robosteer.train import TrainConfig, train
from robosteer.train.strategies import LoraSettings, make_strategy, trainable_parameters

from .train_helpers import single_thread  # noqa: F401 (fixture)

HEADS = ["llm.L0H1", "llm.L0H3", "expert.L1H2"]
CHUNK = 4


def frames(n: int = 6, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    tasks = ["pick up the red cube", "push the blue block to the left"]
    return [{"image": rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), "instruction": tasks[i % 2],
             "action": rng.uniform(-1, 1, (CHUNK, 7)), "proprio": rng.uniform(-1, 1, 7), "episode": i, "step": 0}
            for i in range(n)]


def run(method, out, stop_after=None, **kwargs):
    pi0 = tiny_pi0(seed=0)
    mask = HeadMask.from_heads(HEADS, pi0.head_layout)
    config = TrainConfig(out_dir=str(out), steps=2, batch_size=3, lr=3e-3, schedule="cosine", warmup_steps=1,
                         ckpt_every=1, log_every=1, progress=False, augment=True)
    result = train(pi0, frames(), make_strategy(method, mask=mask, **kwargs), config, stop_after=stop_after)
    return pi0, result


def test_head_finetune_changes_only_the_chosen_heads_slices(tmp_path):
    base = tiny_pi0(seed=0)
    pi0, result = run("heads", tmp_path / "heads")
    assert result.finished and np.isfinite(result.loss)
    deltas = dict(trainable_parameters(pi0))
    assert deltas and all("head_delta" in name for name in deltas)
    # query rows and o_proj columns only (K/V are shared by all heads and stay frozen): 8 x width each
    assert sum(p.numel() for p in deltas.values()) == 2 * (2 * 8 * 32) + 2 * 8 * 16
    before = base.state_dict()
    for name, value in pi0.state_dict().items():  # every base weight bit-identical while the deltas are attached
        if name in before:
            assert torch.equal(value, before[name]), name
    from robosteer.train.adapters import load_heads_adapter

    fresh = tiny_pi0(seed=0)
    load_heads_adapter(fresh, result.output, merge=True)
    after = fresh.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    vlm, expert = "model.paligemma_with_expert.paligemma.model.language_model", "model.paligemma_with_expert.gemma_expert.model"
    assert changed == {f"{vlm}.layers.0.self_attn.q_proj.weight", f"{vlm}.layers.0.self_attn.o_proj.weight",
                       f"{expert}.layers.1.self_attn.q_proj.weight", f"{expert}.layers.1.self_attn.o_proj.weight"}
    for key, heads, dim in ((f"{vlm}.layers.0.self_attn.q_proj.weight", (1, 3), 0),
                            (f"{vlm}.layers.0.self_attn.o_proj.weight", (1, 3), 1),
                            (f"{expert}.layers.1.self_attn.q_proj.weight", (2,), 0),
                            (f"{expert}.layers.1.self_attn.o_proj.weight", (2,), 1)):
        diff = (after[key] - before[key]).abs()
        per_head = diff.reshape(4, 8, -1).amax(dim=(1, 2)) if dim == 0 else diff.reshape(-1, 4, 8).amax(dim=(0, 2))
        assert all((per_head[h] > 0) == (h in heads) for h in range(4)), (key, per_head)


def test_head_finetune_resumes_bit_exactly(tmp_path):
    straight, _ = run("heads", tmp_path / "straight")
    _, first = run("heads", tmp_path / "resumed", stop_after=1)
    assert first.step == 1 and not first.finished
    resumed, second = run("heads", tmp_path / "resumed")
    assert second.resumed_from is not None and second.finished
    a, b = dict(trainable_parameters(straight)), dict(trainable_parameters(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_trains_through_peft_and_leaves_the_unused_modules_out(tmp_path):
    pi0, result = run("lora", tmp_path / "lora", lora=LoraSettings(r=2))
    names = [n for n, _ in trainable_parameters(pi0)]
    assert names and all(".lora_" in n for n in names)
    assert not any("lm_head" in n for n in names)
    assert not any("language_model.layers.1.mlp" in n or "language_model.layers.1.self_attn.o_proj" in n for n in names)
    assert any("gemma_expert.model.layers.1.mlp.down_proj" in n for n in names)
    assert any(p.abs().max() > 0 for n, p in trainable_parameters(pi0) if "lora_B" in n)
    assert (result.output / "adapter_config.json").is_file()


def test_full_finetune_writes_a_lerobot_folder_that_loads_back(tmp_path):
    pi0, result = run("full", tmp_path / "full")
    loaded = robosteer.load_vla(result.output)
    batch = frames(2, seed=5)
    images = {"base_0_rgb": np.stack([f["image"] for f in batch])}
    state = np.stack([f["proprio"] for f in batch])
    kw = dict(images=images, state=state, instruction=[f["instruction"] for f in batch], seed=1)
    assert torch.equal(loaded.predict_action_chunk(**kw), pi0.predict_action_chunk(**kw))


def test_frames_without_chunks_or_state_are_refused(tmp_path):
    pi0 = tiny_pi0(seed=0)
    bad = [dict(f, action=f["action"][0]) for f in frames(3)]
    config = TrainConfig(out_dir=str(tmp_path / "x"), steps=1, batch_size=3, progress=False)
    with pytest.raises(ValueError, match=r"action chunks \(4, 7\).*ActionChunks"):
        train(pi0, bad, make_strategy("full"), config)
    no_state = [{k: v for k, v in f.items() if k != "proprio"} for f in frames(3)]
    with pytest.raises(ValueError, match="robot state"):
        train(tiny_pi0(seed=0), no_state, make_strategy("full"), config)


def test_heads_that_cannot_change_the_output_are_refused_and_never_drawn():
    pi0 = tiny_pi0(seed=0)  # 2 VLM layers of 4 heads: layer 1's heads feed nothing (only its K/V are read)
    with pytest.raises(ValueError, match=r"cannot change this model's output.*llm.L1H2.*pi0's last VLM layer"):
        make_strategy("heads", mask=HeadMask.from_heads(["llm.L0H1", "llm.L1H2"], pi0.head_layout)).prepare(pi0)
    mask = HeadMask.from_heads(["llm.L0H0", "llm.L1H1", "llm.L1H2", "llm.L1H3", "expert.L1H0"], pi0.head_layout)
    random = make_strategy("random-heads", mask=mask, seed=3)
    random.prepare(pi0)
    assert sorted(str(h) for h in random.mask.heads if h.tower == "llm") == ["llm.L0H0", "llm.L0H1", "llm.L0H2",
                                                                              "llm.L0H3"]
    with pytest.raises(ValueError, match="cannot draw 5 random heads of tower 'llm': only 4"):
        HeadMask.random_like(HeadMask.from_heads([f"llm.L{i // 4}H{i % 4}" for i in range(5)], pi0.head_layout), 0,
                             among=active_heads(pi0))

"""Adapter files: bit-exact round trips, merging, and refusing the wrong base model."""

from __future__ import annotations

import json

import pytest
import torch

from robosteer.masks import HeadMask
from robosteer.train import TrainConfig, train
from robosteer.train.adapters import load_heads_adapter, load_lora_adapter
from robosteer.train.batches import BatchBuilder
from robosteer.train.head_deltas import _add_head_deltas
from robosteer.train.strategies import make_strategy

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)

HEADS = ["llm.L0H2", "llm.L1H0", "dino.L0H1", "siglip.L1H0"]


def forward(vla, batch):
    with torch.no_grad():
        return vla(**batch.model_inputs()).logits


@pytest.fixture(scope="module")
def trained_heads(tmp_path_factory):
    """A heads adapter trained for 3 steps (kv on), with the adapted model's logits on a fixed batch."""
    out = tmp_path_factory.mktemp("heads")
    vla = tiny_train_vla()
    strategy = make_strategy("heads", mask=HeadMask.from_heads(HEADS, vla.head_layout), kv=True)
    result = train(vla, make_frames(8), strategy, TrainConfig(out_dir=str(out), steps=3, batch_size=4, lr=1e-2,
                                                            progress=False))
    batch = BatchBuilder(vla).collate(make_frames(3, seed=5))
    return result.output, batch, forward(vla, batch), strategy


def test_heads_adapter_roundtrip_is_bit_exact(trained_heads):
    adapter, batch, adapted, _ = trained_heads
    fresh = tiny_train_vla()
    base = forward(fresh, batch)
    assert not torch.equal(base, adapted)  # the adapter does something
    load_heads_adapter(fresh, adapter)
    assert torch.equal(forward(fresh, batch), adapted)


def test_adapter_file_holds_only_trained_slices(trained_heads):
    from safetensors.torch import load_file

    adapter, _, _, strategy = trained_heads
    meta = json.loads((adapter / "adapter.json").read_text())
    tensors = load_file(str(adapter / "adapter.safetensors"))
    assert meta["heads"] == HEADS and meta["kv"] is True and meta["base_fingerprint"] == tiny_train_vla().fingerprint()
    assert sum(t.numel() for t in tensors.values()) == strategy.deltas.num_parameters()
    assert set(tensors) == {k for k, _ in strategy.deltas.named_parameters()}


def test_merge_matches_unmerged_and_unmerge_restores(trained_heads):
    adapter, batch, adapted, _ = trained_heads
    vla = tiny_train_vla()
    base_state = {k: v.clone() for k, v in vla.state_dict().items()}
    deltas = load_heads_adapter(vla, adapter, merge=True)
    assert set(vla.state_dict()) == set(base_state)  # plain weights again: no delta tensors left on the model
    assert not any(_add_head_deltas in m._forward_hooks.values() for m in vla.modules())  # and no delta hooks
    changed = [k for k in base_state if not torch.equal(base_state[k], vla.state_dict()[k])]
    assert changed and all(k.endswith("weight") or k.endswith("bias") for k in changed)  # the merge wrote into them
    torch.testing.assert_close(forward(vla, batch), adapted, rtol=0, atol=1e-5)
    deltas.unmerge()
    assert torch.equal(forward(vla, batch), adapted)
    deltas.remove()
    assert all(torch.equal(v, base_state[k]) for k, v in vla.state_dict().items())


def test_mismatched_base_model_is_refused(trained_heads):
    adapter, _, _, _ = trained_heads
    other = tiny_train_vla(seed=1)
    with pytest.raises(ValueError, match=f"trained on base model .*fingerprint is {other.fingerprint()}"):
        load_heads_adapter(other, adapter)
    # refused before touching it: same tensors, no delta modules, no hooks
    fresh = tiny_train_vla(seed=1).state_dict()
    assert other.state_dict().keys() == fresh.keys()
    assert torch.equal(torch.cat([v.flatten() for v in other.state_dict().values()]),
                       torch.cat([v.flatten() for v in fresh.values()]))
    assert not any(_add_head_deltas in m._forward_hooks.values() for m in other.modules())


def test_lora_adapter_roundtrip_and_peft_compatibility(tmp_path):
    from peft import PeftModel

    vla = tiny_train_vla()
    result = train(vla, make_frames(8), make_strategy("lora"), TrainConfig(out_dir=str(tmp_path), steps=2,
                                                                          batch_size=4, lr=1e-2, progress=False))
    batch = BatchBuilder(vla).collate(make_frames(2, seed=5))
    adapted = forward(vla, batch)
    assert not torch.equal(adapted, forward(tiny_train_vla(), batch))
    assert (result.output / "adapter_config.json").is_file() and (result.output / "adapter_model.safetensors").is_file()
    fresh = load_lora_adapter(tiny_train_vla(), result.output)
    assert torch.equal(forward(fresh, batch), adapted)
    wrapped = PeftModel.from_pretrained(tiny_train_vla(), str(result.output))  # peft reads the files as its own
    with torch.no_grad():
        logits = wrapped(**batch.model_inputs()).logits
    assert torch.equal(logits, adapted)
    with pytest.raises(ValueError, match="trained on base model"):
        load_lora_adapter(tiny_train_vla(seed=3), result.output)

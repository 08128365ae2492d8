"""Strategies: what trains, how many scalars, and that nothing else moves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robosteer.masks import HeadMask
from robosteer.train import TrainConfig, train
from robosteer.train.head_deltas import HeadDeltas
from robosteer.train.strategies import (FullStrategy, HeadsStrategy, LoraSettings, LoraStrategy, RandomHeadsStrategy,
                                        count_trainable, make_strategy)

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)

HEADS = ["llm.L0H0", "llm.L0H1", "llm.L1H3", "dino.L1H0", "siglip.L0H1"]  # L0H0 and L0H1 share KV head 0


def tower_dims(vla, tower):
    """(d_model, n_heads, n_kv_heads, has_qkv_bias) read from the config, independently of the family map."""
    if tower == "llm":
        kw = vla.config.llama_kwargs()
        return kw["hidden_size"], kw["num_attention_heads"], kw["num_key_value_heads"], False
    cfg = next(t for t in vla.config.towers if t.kind == tower)
    return cfg.width, cfg.heads, cfg.heads, True


def analytic_heads_count(vla, heads, kv):
    total, groups = 0, set()
    for text in heads:
        tower, rest = text.split(".")
        layer, head = (int(x) for x in rest[1:].split("H"))
        d, n, n_kv, bias = tower_dims(vla, tower)
        hd = d // n
        total += 2 * hd * d + (hd if bias else 0)
        groups.add((tower, layer, head // (n // n_kv)))
    if kv:
        for tower, _, _ in groups:
            d, n, _, bias = tower_dims(vla, tower)
            total += 2 * (d // n) * d + ((d // n) if bias else 0)  # k and v rows, v bias (k bias: zero gradient)
    return total


def analytic_lora_count(vla, r):
    skip = ["attn_pool", "lm_head"] + [f"{path}.blocks.{t.depth - 1}." for path, t in
                                        zip(("featurizer", "fused_featurizer"), vla.config.towers)]
    return sum(r * (m.in_features + m.out_features) for name, m in vla.named_modules()
               if isinstance(m, nn.Linear) and not any(s in name for s in skip))


@pytest.mark.parametrize("heads, kv", [(HEADS[:3], False), (HEADS[:3], True), (HEADS, False), (HEADS, True),
                                       (["siglip.L1H1"], True)])
def test_heads_trainable_count_is_analytic(heads, kv):
    vla = tiny_train_vla()
    strategy = HeadsStrategy(HeadMask.from_heads(heads, vla.head_layout), kv=kv)
    strategy.prepare(vla)
    assert count_trainable(vla) == analytic_heads_count(vla, heads, kv) == strategy.deltas.num_parameters()


def test_heads_of_the_vision_block_that_never_runs_are_refused():
    vla = tiny_train_vla()  # OpenVLA reads the vision towers' second-to-last block: the last one never runs
    with pytest.raises(ValueError, match=r"cannot change this model's output.*siglip.L2H1"):
        HeadsStrategy(HeadMask.from_heads(["llm.L0H0", "siglip.L2H1"], vla.head_layout)).prepare(vla)


def test_gqa_kv_head_trained_once():
    vla = tiny_train_vla()
    strategy = HeadsStrategy(HeadMask.from_heads(["llm.L0H0", "llm.L0H1"], vla.head_layout), kv=True)
    strategy.prepare(vla)
    keys = [k for k, _ in strategy.deltas.named_parameters()]
    assert keys.count("llm.L0KV0.k") == 1 and keys.count("llm.L0KV0.v") == 1
    assert not any("KV1" in k for k in keys)


@pytest.mark.parametrize("r", [4, 32])
def test_lora_trainable_count_and_every_adapter_gets_gradient(r):
    from robosteer.train.batches import BatchBuilder

    vla = tiny_train_vla()
    expected = analytic_lora_count(vla, r)
    LoraStrategy(LoraSettings(r=r)).prepare(vla)
    assert count_trainable(vla) == expected
    assert not any("lm_head" in n and p.requires_grad for n, p in vla.named_parameters())
    batch = BatchBuilder(vla).collate(make_frames(2))
    vla(**batch.model_inputs(), labels=batch.labels).loss.backward()
    for name, p in vla.named_parameters():
        if p.requires_grad and "lora_A" in name:  # lora_B starts at zero, so A's gradient is zero; B's is not
            continue
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_full_trains_everything():
    vla = tiny_train_vla()
    FullStrategy().prepare(vla)
    assert count_trainable(vla) == sum(p.numel() for p in vla.parameters())


def test_random_heads_same_size_per_tower():
    vla = tiny_train_vla()
    mask = HeadMask.from_heads(HEADS, vla.head_layout)
    strategy = RandomHeadsStrategy(mask, seed=1)
    assert strategy.mask.counts() == mask.counts() and strategy.mask.heads != mask.heads


def test_make_strategy_errors():
    with pytest.raises(ValueError, match="unknown training method"):
        make_strategy("bitfit")
    with pytest.raises(ValueError, match="needs a head mask"):
        make_strategy("heads")
    with pytest.raises(ValueError, match="rank"):
        LoraSettings(r=0)


def test_attach_twice_or_empty_mask_refused():
    vla = tiny_train_vla()
    mask = HeadMask.from_heads(HEADS[:1], vla.head_layout)
    HeadDeltas.attach(vla, mask)
    with pytest.raises(ValueError, match="already has parametrized"):
        HeadDeltas.attach(vla, mask)
    with pytest.raises(ValueError, match="no heads"):
        HeadsStrategy(HeadMask.from_heads([], vla.head_layout))


def _split_rows(tensor, dim, index):
    keep = torch.ones(tensor.shape[dim], dtype=torch.bool)
    keep[index] = False
    return tensor.index_select(dim, index), tensor.index_select(dim, torch.nonzero(keep)[:, 0])


@pytest.mark.parametrize("kv", [False, True])
def test_heads_finetuning_changes_only_selected_slices(tmp_path, kv):
    base = tiny_train_vla().state_dict()
    vla = tiny_train_vla()
    strategy = HeadsStrategy(HeadMask.from_heads(HEADS, vla.head_layout), kv=kv)
    train(vla, make_frames(8), strategy, TrainConfig(out_dir=str(tmp_path), steps=3, batch_size=4, lr=1e-2,
                                                   weight_decay=0.1, progress=False, augment=False))
    deltas = strategy.deltas
    sites = {}
    for site in deltas.sites:
        path = next(n for n, m in vla.named_modules() if m is site.module)
        sites[f"{path}.{site.tensor}"] = site
    deltas.merge()
    merged = vla.state_dict()
    assert set(merged) == set(base)
    changed_kinds = set()
    for key, value in merged.items():
        if key not in sites:
            assert torch.equal(value, base[key]), f"{key} changed but is not a selected slice"
            continue
        site = sites[key]
        inside, outside = _split_rows(value, site.delta.dim, site.delta.index)
        base_in, base_out = _split_rows(base[key], site.delta.dim, site.delta.index)
        assert torch.equal(outside, base_out), f"{key}: entries outside the selected slices changed"
        for canonical, pkey in site.keys.items():  # every selected slice moved
            block = site.delta.deltas[pkey]
            assert block.abs().sum() > 0, canonical
            changed_kinds.add(canonical.split(".")[0] + "." + canonical.rsplit(".", 1)[1])
        assert not torch.equal(inside, base_in)
    expected = {"llm.q", "llm.o", "dino.q", "dino.q_bias", "dino.o", "siglip.q", "siglip.q_bias", "siglip.o"}
    if kv:
        expected |= {"llm.k", "llm.v", "dino.k", "dino.v", "dino.v_bias", "siglip.v_bias"}
        assert not any(kind.endswith("k_bias") for kind in changed_kinds)
    assert expected <= changed_kinds
    out_bias = "language_model.model.layers.0.self_attn.o_proj.bias", "vision_backbone.featurizer.blocks.1.attn.proj.bias"
    assert out_bias[1] in merged and torch.equal(merged[out_bias[1]], base[out_bias[1]])


def test_lora_targets_come_from_the_family_and_are_unchanged():
    """``all_linear_targets`` asks the family for the output embedding: the same list as before (every running
    ``nn.Linear`` but ``language_model.lm_head``), on the tiny model and the shipped default."""
    from robosteer.models import load_vla
    from robosteer.train.strategies import all_linear_targets

    for vla in (tiny_train_vla(), load_vla("default")):
        assert vla.family.output_modules(vla) == [vla.language_model.lm_head]
        unused = [f"{path}." for path in vla.unused_modules()]
        before = [name for name, m in vla.named_modules() if isinstance(m, nn.Linear)
                  and m is not vla.language_model.get_output_embeddings()
                  and not any(f"{name}.".startswith(p) for p in unused)]
        targets = all_linear_targets(vla)
        assert targets == before and "language_model.lm_head" not in targets
        assert "language_model.model.layers.0.self_attn.q_proj" in targets

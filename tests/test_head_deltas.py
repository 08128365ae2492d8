"""Head deltas as output hooks: equal to editing the weights, gradients only for the slices, hooks see the adapted model."""

from __future__ import annotations

import copy

import pytest
import torch

from robosteer.masks import HeadMask
from robosteer.train.batches import BatchBuilder
from robosteer.train.head_deltas import HeadDeltas

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)

# L0H0 and L0H1 share KV head 0 (GQA); one head per vision tower (fused qkv with bias)
CASES = [(["llm.L0H0", "llm.L0H1", "llm.L1H3"], False), (["llm.L0H0", "llm.L0H1", "llm.L1H3"], True),
         (["dino.L1H0", "dino.L1H1"], True), (["siglip.L0H1"], True),
         (["llm.L1H2", "dino.L0H1", "siglip.L1H0"], False)]


@pytest.fixture(scope="module")
def batch():
    return BatchBuilder(tiny_train_vla()).collate(make_frames(2, seed=3))


def randomised(heads, kv, seed=0):
    """A tiny model with the heads' deltas attached and set to random values."""
    vla = tiny_train_vla()
    deltas = HeadDeltas.attach(vla, HeadMask.from_heads(heads, vla.head_layout), kv=kv)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in deltas.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return vla, deltas


def loss_of(vla, batch):
    return vla(**batch.model_inputs(), labels=batch.labels).loss


@pytest.mark.parametrize("heads, kv", CASES)
def test_delta_gradients_equal_the_weight_slices_gradients(heads, kv, batch):
    """The hooked deltas compute what editing the weights computes: same loss, and each delta's gradient
    is the gradient of the weight slice it covers (taken on the merged model with trainable weights)."""
    vla, deltas = randomised(heads, kv)
    for p in vla.parameters():
        p.requires_grad_(p in set(deltas.parameters()))
    loss = loss_of(vla, batch)
    loss.backward()
    assert all(p.grad is None for n, p in vla.named_parameters() if "_head_delta." not in n)  # no full-size gradients
    grads = {key: p.grad.clone() for key, p in deltas.named_parameters()}

    deltas.merge()  # the same adapted weights, now as plain tensors
    for p in vla.parameters():
        p.requires_grad_(True)
        p.grad = None
    merged = loss_of(vla, batch)
    merged.backward()
    torch.testing.assert_close(merged, loss, rtol=0, atol=1e-5)
    for site in deltas.sites:
        full = getattr(site.module, site.tensor).grad
        for start, size, pkey in site.delta.spans:
            key = next(k for k, v in site.keys.items() if v == pkey)
            torch.testing.assert_close(grads[key], full.narrow(site.delta.dim, start, size), rtol=1e-4, atol=1e-6)
            assert grads[key].abs().sum() > 0, key


@pytest.mark.parametrize("heads, kv", CASES[1:4])
def test_hooks_read_the_adapted_values(heads, kv, batch):
    """``run_with_cache`` on the adapted model records what the merged model computes, and differs from the base."""
    vla, deltas = randomised(heads, kv)
    tower = heads[0].split(".")[0]
    names = f"{tower}.*hook_[qkvz]"
    with torch.no_grad():
        base_out, base_cache = tiny_train_vla().run_with_cache(**batch.model_inputs(), names_filter=names)
        out, cache = vla.run_with_cache(**batch.model_inputs(), names_filter=names)
        deltas.merge()
        merged_out, merged_cache = vla.run_with_cache(**batch.model_inputs(), names_filter=names)
    assert set(cache.keys()) == set(merged_cache.keys()) and len(cache.keys()) > 0
    for name in cache.keys():
        torch.testing.assert_close(cache[name], merged_cache[name], rtol=0, atol=1e-5)
    changed = {n for n in cache.keys() if not torch.equal(cache[n], base_cache[n])}
    layer = heads[0].split(".")[1][1]
    assert {f"{tower}.blocks.{layer}.attn.hook_{k}" for k in (("q", "k", "v") if kv else ("q",))} <= changed
    torch.testing.assert_close(out.logits, merged_out.logits, rtol=0, atol=1e-5)


def test_patching_hook_z_feeds_the_output_deltas(batch):
    """A hook_z patch on a selected head's layer goes through that head's output delta: patching in the
    adapted run's own value changes nothing; zeroing it gives the merged model's zero-patched logits."""
    vla, deltas = randomised(["llm.L1H2"], False)
    site = "llm.blocks.1.attn.hook_z"
    with torch.no_grad():
        clean, cache = vla.run_with_cache(**batch.model_inputs(), names_filter=site)
        same = vla.run_with_hooks(**batch.model_inputs(), fwd_hooks=[(site, lambda z, s: cache[site])])
        zeroed = vla.run_with_hooks(**batch.model_inputs(), fwd_hooks=[(site, lambda z, s: torch.zeros_like(z))])
        deltas.merge()
        merged_zeroed = vla.run_with_hooks(**batch.model_inputs(), fwd_hooks=[(site, lambda z, s: torch.zeros_like(z))])
    assert torch.equal(same.logits, clean.logits)
    torch.testing.assert_close(zeroed.logits, merged_zeroed.logits, rtol=0, atol=1e-5)


def test_a_deep_copy_carries_its_own_deltas(batch):
    vla, deltas = randomised(["llm.L0H1", "dino.L1H0"], True)
    twin = copy.deepcopy(vla)
    with torch.no_grad():
        expected = vla(**batch.model_inputs()).logits
        assert torch.equal(twin(**batch.model_inputs()).logits, expected)
        for p in deltas.parameters():  # the copy does not read the original's deltas
            p.zero_()
        assert torch.equal(twin(**batch.model_inputs()).logits, expected)
        assert torch.equal(vla(**batch.model_inputs()).logits, tiny_train_vla()(**batch.model_inputs()).logits)


def test_base_weights_stay_bit_identical_and_merge_or_remove_leave_plain_modules():
    base = tiny_train_vla().state_dict()
    vla, deltas = randomised(["llm.L0H0", "dino.L1H1"], True)
    adapted = vla.state_dict()
    assert all(torch.equal(adapted[k], v) for k, v in base.items())  # deltas live beside the weights
    assert {k for k in adapted if k not in base} == {f"{n}" for n, _ in vla.named_parameters() if "_head_delta." in n}
    deltas.merge()  # plain weights again: no delta submodules, no hooks
    assert vla.state_dict().keys() == base.keys() and all(not m._forward_hooks for m in vla.modules())
    deltas.unmerge()
    assert vla.state_dict().keys() == adapted.keys()
    deltas.remove()
    assert vla.state_dict().keys() == base.keys() and all(not m._forward_hooks for m in vla.modules())
    assert all(torch.equal(v, base[k]) for k, v in vla.state_dict().items())


def test_transformer_lens_export_runs_the_deltas(batch):
    """The bridge calls the model's own projections, so the hooked deltas run inside it (its weight views
    ``W_Q``/``W_O`` show the base weights until the deltas are merged)."""
    pytest.importorskip("transformer_lens")
    from robosteer.interop.transformer_lens import bridge_inputs, to_transformer_lens

    vla, _ = randomised(["llm.L1H0"], True)
    inputs = batch.model_inputs()
    with torch.no_grad():
        adapted = vla(**inputs).logits
        logits, _ = to_transformer_lens(vla).run_with_cache(**bridge_inputs(vla, **inputs))
    torch.testing.assert_close(logits, adapted, rtol=0, atol=1e-5)

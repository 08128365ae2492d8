"""The hook layer: every head a named site; caching, patching, ablating and steering do exactly what they say."""

import numpy as np
import pytest
import torch

import robosteer
from robosteer.interventions import ablate_heads, active_heads, patch_heads, steer_heads
from robosteer.models.tiny import tiny_vla
from tests.conftest import fixture_path

MODELS = {
    "tiny-fused": dict(),
    "tiny-gqa-proprio": dict(llm_heads=4, llm_kv_heads=2, proprio_dim=7, image_size=32, patch_size=8),
}


@pytest.fixture(scope="module", params=sorted(MODELS) + ["openvla-tiny-a"])
def model_and_inputs(request):
    if request.param == "openvla-tiny-a":  # the reference checkpoint written by the original OpenVLA code
        vla = robosteer.load_vla(fixture_path("openvla-tiny-a"), dtype=torch.float32)
        e = np.load(fixture_path("openvla-tiny-a", "expected.npz"))
        return vla, dict(input_ids=torch.from_numpy(e["case0_input_ids_full"]).expand(2, -1),
                         pixel_values=torch.from_numpy(e["pixel_values"]))
    vla = tiny_vla(seed=1, **MODELS[request.param])
    size = vla.config.image_size
    rng = np.random.default_rng(0)
    images = list(rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8))
    kwargs = dict(input_ids=vla.tokenize("put the red cube on the plate").expand(2, -1), pixel_values=vla.preprocess(images))
    if vla.config.proprio_dim:
        kwargs["proprio"] = torch.from_numpy(rng.uniform(-1, 1, (2, 7))).float()
    return vla, kwargs


def test_site_counts_tiny(tiny_vla):
    assert len(tiny_vla.sites("llm")) == 2 * 4
    assert len(tiny_vla.sites("dino")) == 3 * 4 and len(tiny_vla.sites("siglip")) == 3 * 2
    assert len(tiny_vla.sites()) == 8 + 12 + 6
    assert tiny_vla.sites("llm", kind="hook_z") == ["llm.blocks.0.attn.hook_z", "llm.blocks.1.attn.hook_z"]


def test_site_counts_7b_meta():
    vla = robosteer.build_vla_from_config(fixture_path("openvla-7b-config.json"), device="meta")
    assert [len(vla.sites(t)) for t in ("llm", "dino", "siglip")] == [1024, 384, 432]
    assert str(vla.sites("llm")[-1]) == "llm.L31H31"


def test_caching_does_not_change_logits(model_and_inputs):
    vla, kw = model_and_inputs
    with torch.no_grad():
        plain = vla(**kw).logits
        cached, cache = vla.run_with_cache(**kw)
    assert torch.equal(plain, cached.logits)
    assert "llm.blocks.1.attn.hook_z" in cache and "dino.blocks.1.attn.hook_z" in cache
    # the vision towers' last block never runs (OpenVLA takes the second-to-last block's output)
    assert "dino.blocks.2.attn.hook_z" not in cache


def test_patching_own_activations_changes_nothing(model_and_inputs):
    vla, kw = model_and_inputs
    with torch.no_grad():
        plain, cache = vla.run_with_cache(**kw, names_filter="*hook_z")
        patched = vla.run_with_hooks(**kw, fwd_hooks=patch_heads(active_heads(vla), cache))
    assert torch.equal(plain.logits, patched.logits)


def test_zero_ablation_is_local(model_and_inputs):
    vla, kw = model_and_inputs
    target = robosteer.Head("llm", 1, 1)
    with torch.no_grad():
        plain, before = vla.run_with_cache(**kw, names_filter="*hook_z")
        with vla.hooks(fwd_hooks=ablate_heads([target])):
            ablated, after = vla.run_with_cache(**kw, names_filter="*hook_z")
    assert (ablated.logits - plain.logits).abs().max() > 1e-4
    for name in before:
        if name.startswith("llm.blocks.1"):
            continue
        assert torch.equal(before[name], after[name]), name  # every earlier layer (and every tower) untouched
    same_layer = [h for h in range(vla.head_layout.shape("llm")[1]) if h != 1]
    assert torch.equal(before["llm.blocks.1.attn.hook_z"][:, :, same_layer], after["llm.blocks.1.attn.hook_z"][:, :, same_layer])
    assert after.head(target).abs().max() == 0


def test_mean_ablation_hand_checked(tiny_vla):
    vla = tiny_vla
    rng = np.random.default_rng(3)
    ids = vla.tokenize("lift the ball").expand(3, -1)
    pv = vla.preprocess(list(rng.integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)))
    with torch.no_grad():
        _, ref = vla.run_with_cache(input_ids=ids, pixel_values=pv, names_filter="llm.blocks.0.attn.hook_z")
        means = ref.mean()  # over the batch
        with vla.hooks(fwd_hooks=ablate_heads(["llm.L0H1"], how="mean", means=means)):
            _, after = vla.run_with_cache(input_ids=ids, pixel_values=pv, names_filter="llm.blocks.0.attn.hook_z")
    z = after["llm.blocks.0.attn.hook_z"]
    expected = ref["llm.blocks.0.attn.hook_z"][:, :, 1].mean(0, keepdim=True).expand(3, -1, -1)
    assert torch.allclose(z[:, :, 1], expected, atol=1e-6)
    assert torch.equal(z[:, :, [0, 2, 3]], ref["llm.blocks.0.attn.hook_z"][:, :, [0, 2, 3]])


def test_steering_adds_the_projected_vector(tiny_vla):
    vla = tiny_vla
    ids = vla.tokenize("push the cube left")
    pv = vla.preprocess(np.zeros((28, 28, 3), np.uint8))
    vec = torch.randn(8, generator=torch.Generator().manual_seed(0))
    name = "llm.blocks.1.attn.hook_attn_out"
    with torch.no_grad():
        _, base = vla.run_with_cache(input_ids=ids, pixel_values=pv, names_filter=name)
        with vla.hooks(fwd_hooks=steer_heads({"llm.L1H3": vec}, scale=2.5, positions=[-1])):
            _, steered = vla.run_with_cache(input_ids=ids, pixel_values=pv, names_filter=name)
    w_o = vla.language_model.model.layers[1].self_attn.o_proj.weight  # (d_model, H * D)
    delta = steered[name] - base[name]
    assert torch.allclose(delta[0, -1], 2.5 * w_o[:, 24:32] @ vec, atol=1e-5)
    assert delta[0, :-1].abs().max() == 0  # other positions untouched


def test_hooks_removed_after_exception(tiny_vla):
    def count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny_vla.modules())

    before = count()
    with pytest.raises(RuntimeError, match="inside"):
        with tiny_vla.hooks(fwd_hooks=[("*hook_z", lambda a, s: None), ("llm.blocks.0.attn.hook_pattern", lambda a, s: None)]):
            assert count() > before
            raise RuntimeError("inside")
    assert count() == before
    attn = tiny_vla.language_model.model.layers[0].self_attn
    assert attn.config._attn_implementation == "sdpa" and not hasattr(attn, "robosteer_pattern_hook")


def test_patterns_are_causal_softmax_and_reproduce_z(tiny_vla):
    vla = tiny_vla
    kw = dict(input_ids=vla.tokenize("stack the cubes"), pixel_values=vla.preprocess(np.full((28, 28, 3), 90, np.uint8)))
    with torch.no_grad():
        plain = vla(**kw).logits
        out, cache = vla.run_with_cache(**kw, names_filter=["llm.blocks.1.attn.hook_pattern", "llm.blocks.1.attn.hook_z",
                                                              "dino.blocks.0.attn.hook_pattern", "dino.blocks.0.attn.hook_z",
                                                              "dino.blocks.0.attn.hook_v"])
    assert (out.logits - plain).abs().max() < 1e-5  # explicit attention only while hooked
    p = cache["llm.blocks.1.attn.hook_pattern"]  # (B, H, T, T)
    assert torch.allclose(p.sum(-1), torch.ones_like(p.sum(-1)), atol=1e-6)
    assert p.triu(diagonal=1).abs().max() == 0
    dp, dv = cache["dino.blocks.0.attn.hook_pattern"], cache["dino.blocks.0.attn.hook_v"]
    z = torch.einsum("bhqk,bkhd->bqhd", dp, dv)
    assert torch.allclose(z, cache["dino.blocks.0.attn.hook_z"], atol=1e-5)


def test_pattern_can_be_replaced(tiny_vla):
    vla = tiny_vla
    kw = dict(input_ids=vla.tokenize("stack the cubes"), pixel_values=vla.preprocess(np.full((28, 28, 3), 90, np.uint8)))

    def uniform_causal(p, site):
        mask = torch.ones_like(p).tril()
        return mask / mask.sum(-1, keepdim=True)

    with torch.no_grad():
        plain = vla(**kw).logits
        changed = vla.run_with_hooks(**kw, fwd_hooks=[("llm.blocks.0.attn.hook_pattern", uniform_causal)]).logits
    assert (changed - plain).abs().max() > 1e-3


def test_gradients_through_all_paths(tiny_vla):
    """<grad, delta> predicts the metric change of a small edit to an early head (total, not direct, effect)."""
    vla = tiny_vla
    kw = dict(input_ids=vla.tokenize("pick up the ball"), pixel_values=vla.preprocess(np.full((28, 28, 3), 40, np.uint8)))
    ids = torch.arange(vla.action_tokenizer.first_id, vla.config.action_vocab_end)

    def metric(out):
        return out.logits[:, -1, ids].log_softmax(-1)[:, 7]

    value, acts, grads = vla.run_with_cache_and_grads(metric, **kw, names_filter="*hook_z")
    assert all(p.grad is None for p in vla.parameters())
    name = "dino.blocks.0.attn.hook_z"
    delta = torch.randn(acts[name].shape, generator=torch.Generator().manual_seed(1)) * 1e-3
    with torch.no_grad():
        moved = metric(vla.run_with_hooks(**kw, fwd_hooks=[(name, lambda a, s: a + delta)]))
    predicted = (grads[name] * delta).sum()
    assert torch.allclose(moved - value, predicted, rtol=0.05, atol=1e-6)
    assert set(grads) == set(acts) and len(grads) == 2 + 2 + 2


def test_errors_name_the_problem(tiny_vla):
    with pytest.raises(ValueError, match=r"no tower 'vit'; towers: llm \(2 layers x 4 heads\), dino \(3 layers x 4 heads\)"):
        tiny_vla.run_with_hooks(fwd_hooks=[("vit.blocks.0.attn.hook_z", lambda a, s: None)])
    with pytest.raises(ValueError, match=r"tower 'llm' has layers 0..1"):
        tiny_vla.run_with_hooks(fwd_hooks=[("llm.blocks.7.attn.hook_z", lambda a, s: None)])
    kw = dict(input_ids=tiny_vla.tokenize("lift"), pixel_values=tiny_vla.preprocess(np.zeros((28, 28, 3), np.uint8)))
    _, cache = tiny_vla.run_with_cache(**kw, names_filter="llm.blocks.0.attn.hook_z")
    longer = dict(input_ids=tiny_vla.tokenize("lift the red cube"), pixel_values=kw["pixel_values"])
    with pytest.raises(ValueError, match=r"patch for llm.blocks.0.attn.hook_z has shape \(1, \d+, 4, 8\) but the activation "
                                         r"has shape \(1, \d+, 4, 8\)"):
        tiny_vla.run_with_hooks(**longer, fwd_hooks=patch_heads(["llm.L0H0"], cache))
    with pytest.raises(ValueError, match=r"returned shape \(3,\), but the activation has shape"):
        tiny_vla.run_with_hooks(**kw, fwd_hooks=[("llm.blocks.0.attn.hook_z", lambda a, s: torch.zeros(3))])


def test_hook_on_unused_block_warns(tiny_vla):
    kw = dict(input_ids=tiny_vla.tokenize("lift"), pixel_values=tiny_vla.preprocess(np.zeros((28, 28, 3), np.uint8)))
    with pytest.warns(UserWarning, match="dino.blocks.2.attn.hook_z never runs"):
        tiny_vla.run_with_hooks(**kw, fwd_hooks=[("dino.blocks.2.attn.hook_z", lambda a, s: None)])


def test_active_heads_excludes_unused_blocks(tiny_vla):
    heads = active_heads(tiny_vla)
    assert len(heads) == 8 + 2 * 4 + 2 * 2
    assert all(not (h.tower != "llm" and h.layer == 2) for h in heads)


def test_hooks_see_what_a_lora_adapter_computes():
    peft = pytest.importorskip("peft")
    vla = tiny_vla(seed=2)
    kw = dict(input_ids=vla.tokenize("open the drawer"), pixel_values=vla.preprocess(np.full((28, 28, 3), 128, np.uint8)))
    with torch.no_grad():
        _, base = vla.run_with_cache(**kw, names_filter="llm.*")
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"], init_lora_weights="gaussian")
    peft.inject_adapter_in_model(cfg, vla)
    for name, p in vla.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # make the adapter non-zero
    with torch.no_grad():
        out, adapted = vla.run_with_cache(**kw, names_filter="llm.*")
        again = vla.run_with_hooks(**kw, fwd_hooks=patch_heads(active_heads(vla, "llm"), adapted))
    assert torch.equal(out.logits, again.logits)
    for layer in range(2):
        z = adapted[f"llm.blocks.{layer}.attn.hook_z"]
        o_proj = vla.language_model.model.layers[layer].self_attn.o_proj  # peft's LoRA wrapper
        assert type(o_proj).__module__.startswith("peft")
        with torch.no_grad():
            expected = o_proj(z.flatten(2))
        assert torch.allclose(adapted[f"llm.blocks.{layer}.attn.hook_attn_out"], expected, atol=1e-6)
        assert not torch.allclose(adapted[f"llm.blocks.{layer}.attn.hook_attn_out"], base[f"llm.blocks.{layer}.attn.hook_attn_out"])
    assert not torch.allclose(adapted["llm.blocks.0.attn.hook_q"], base["llm.blocks.0.attn.hook_q"])


def test_group_by_site_groups_heads_by_their_hook_z_in_first_seen_order():
    from robosteer.interventions import group_by_site
    from robosteer.sites import Head

    pairs = [("llm.L1H2", 2), (Head("dino", 0, 1), 1), ("llm.L1H0", 0), ("llm.L1H2", 2), ("llm.L0H3", 3)]
    assert group_by_site(pairs) == {"llm.blocks.1.attn.hook_z": [2, 0, 2], "dino.blocks.0.attn.hook_z": [1],
                                    "llm.blocks.0.attn.hook_z": [3]}
    assert list(group_by_site(pairs, unique=True).items())[0] == ("llm.blocks.1.attn.hook_z", [2, 0])

"""nnsight and TransformerLens see the same activations as robosteer's own hooks.

Each check compares against ``vla.run_with_cache`` / ``vla.run_with_hooks`` on tiny
real-architecture models (with and without grouped-query attention), and each edit is
checked to change the output, so an interop path that silently reads or writes the wrong
tensor fails.
"""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch

from robosteer.interventions import ablate_heads
from robosteer.models.tiny import tiny_vla

MODELS = {"mha": {}, "gqa": {"llm_kv_heads": 2, "llm_layers": 3}}
# every nnsight site kind once, spread over the towers (fused qkv in the vision towers, separate q/k/v in the LLM)
WRITE_CASES = [("hook_q", "dino", 1), ("hook_k", "llm", 1), ("hook_v", "siglip", 0), ("hook_v", "llm", 0),
               ("hook_z", "siglip", 0), ("hook_attn_out", "dino", 1), ("hook_resid_pre", "llm", 1),
               ("hook_resid_post", "siglip", 0)]


@pytest.fixture(scope="module", params=list(MODELS))
def vla(request):
    return tiny_vla(seed=0, **MODELS[request.param])


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 250, (2, 6), generator=gen)
    ids[:, 0] = 1  # BOS
    return {"input_ids": ids, "pixel_values": torch.randn(2, 6, 28, 28, generator=gen)}


@pytest.fixture
def offline(monkeypatch):
    """No hub, no sockets: anything that tries to download fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise RuntimeError("network access during an offline export")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _name(kind: str, tower: str, layer: int) -> str:
    from robosteer.sites import hook_name

    return hook_name(tower, layer, kind)


# --- nnsight --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nn_model(vla):
    pytest.importorskip("nnsight")
    from robosteer.interop.nnsight import wrap

    return wrap(copy.deepcopy(vla))  # nnsight installs controllers on the modules it wraps


def test_nnsight_reads_every_site_like_run_with_cache(vla, nn_model, batch):
    from robosteer.interop.nnsight import read_many

    _, cache = vla.run_with_cache(**batch)
    with torch.no_grad(), nn_model.trace(**batch):
        acts = read_many(nn_model, lambda n: True).save()
    assert set(acts) == set(cache.keys())
    assert any(n.startswith("dino.") for n in acts) and any(n.startswith("siglip.") for n in acts)
    for name, value in acts.items():
        assert value.shape == cache[name].shape, name
        torch.testing.assert_close(value, cache[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("tower,layer", [("llm", 1), ("dino", 0), ("siglip", 1)])
def test_nnsight_hook_z_read_is_per_head(vla, nn_model, batch, tower, layer):
    from robosteer.interop.nnsight import envoy_for, read

    name = _name("hook_z", tower, layer)
    _, cache = vla.run_with_cache(**batch, names_filter=name)
    with torch.no_grad(), nn_model.trace(**batch):
        flat = envoy_for(nn_model, name).input.clone().save()  # the out-projection's input
        z = read(nn_model, name).clone().save()
    heads, head_dim = cache[name].shape[-2:]
    assert z.shape == (*flat.shape[:-1], heads, head_dim)
    assert torch.equal(z, cache[name])
    assert torch.equal(z.reshape(flat.shape), flat)


def test_nnsight_zeroing_a_head_equals_ablate_heads(vla, nn_model, batch, clean_logits):
    from robosteer.interop.nnsight import read, run_order, write

    heads = {"dino.blocks.0.attn.hook_z": 3, "siglip.blocks.1.attn.hook_z": 1, "llm.blocks.1.attn.hook_z": 2}
    clean = clean_logits
    ours = vla.run_with_hooks(**batch, fwd_hooks=ablate_heads(["dino.L0H3", "siglip.L1H1", "llm.L1H2"])).logits
    with torch.no_grad(), nn_model.trace(**batch):
        for name in run_order(vla, heads):
            z = read(nn_model, name).clone()
            z[:, :, heads[name]] = 0
            write(nn_model, name, z)
        theirs = nn_model.output.logits.save()
    assert (ours - clean).abs().max() > 1e-3  # the ablation does something
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def clean_logits(vla, batch):
    return vla(**batch).logits


@pytest.mark.parametrize("kind,tower,layer", WRITE_CASES)
def test_nnsight_write_equals_robosteer_hook(vla, nn_model, batch, clean_logits, kind, tower, layer):
    from robosteer.interop.nnsight import read, write

    name = _name(kind, tower, layer)
    clean = clean_logits
    ours = vla.run_with_hooks(**batch, fwd_hooks=[(name, lambda act, site: act * 0.5)]).logits
    with torch.no_grad(), nn_model.trace(**batch):
        write(nn_model, name, read(nn_model, name) * 0.5)
        theirs = nn_model.output.logits.save()
    assert (ours - clean).abs().max() > 1e-5
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-6)


def test_wrapping_leaves_the_model_computing_the_same(batch):
    pytest.importorskip("nnsight")
    from robosteer.interop.nnsight import wrap

    model = tiny_vla(seed=0)
    before, cache_before = model.run_with_cache(**batch, names_filter="*hook_z")
    wrap(model)
    after, cache_after = model.run_with_cache(**batch, names_filter="*hook_z")
    assert torch.equal(before.logits, after.logits)
    for name in cache_before.keys():
        assert torch.equal(cache_before[name], cache_after[name])


def test_nnsight_errors_are_clear(vla, nn_model):
    from robosteer.interop.nnsight import envoy_for, locate, wrap

    with pytest.raises(ValueError, match="no nnsight counterpart"):
        locate(vla, "llm.blocks.0.attn.hook_pattern")
    last = vla.config.towers[0].depth - 1  # OpenVLA reads the second-to-last block: the last never runs
    with pytest.raises(ValueError, match="never runs"):
        locate(vla, f"dino.blocks.{last}.attn.hook_z")
    with pytest.raises(ValueError, match="tower"):
        envoy_for(nn_model, "clip.blocks.0.attn.hook_z")
    with pytest.raises(TypeError, match="robosteer model"):
        wrap(torch.nn.Linear(2, 2))


def test_nnsight_write_checks_the_shape(vla, nn_model, batch):
    from robosteer.interop.nnsight import read, write

    with pytest.raises(Exception) as info:
        with torch.no_grad(), nn_model.trace(**batch):
            z = read(nn_model, "llm.blocks.0.attn.hook_z")
            write(nn_model, "llm.blocks.0.attn.hook_z", z[:, :, :1])
    assert "shape" in str(info.value)


# --- TransformerLens ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bridge(vla):
    pytest.importorskip("transformer_lens")
    from robosteer.interop.transformer_lens import to_transformer_lens

    return to_transformer_lens(vla)


def test_transformer_lens_export_builds_offline(vla, offline):
    pytest.importorskip("transformer_lens")
    import transformer_lens.model_bridge.sources  # noqa: F401  (import first: the fixture blocks sockets only)
    from robosteer.interop.transformer_lens import to_transformer_lens

    exported = to_transformer_lens(vla)
    assert type(exported).__name__ == "TransformerBridge"
    assert exported.cfg.n_layers == len(vla.language_model.model.layers)


def test_transformer_lens_sites_equal_ours_for_every_llm_layer(vla, bridge, batch):
    from robosteer.interop.transformer_lens import bridge_inputs, tl_hook_name

    names = vla.hook_names(towers=["llm"])  # every kind, hook_pattern included
    ours, cache = vla.run_with_cache(**batch, names_filter=names)
    with torch.no_grad():
        logits, tl_cache = bridge.run_with_cache(**bridge_inputs(vla, **batch))
    layers = {int(n.split(".")[2]) for n in names if n.endswith("hook_z")}
    assert layers == set(range(len(vla.language_model.model.layers)))
    for name in names:
        theirs = tl_cache[tl_hook_name(name)]
        assert theirs.shape == cache[name].shape, name
        torch.testing.assert_close(theirs, cache[name], rtol=0, atol=1e-5, msg=name)
    torch.testing.assert_close(logits, ours.logits, rtol=0, atol=1e-5)


def test_transformer_lens_export_with_padding(vla, bridge, batch):
    from robosteer.interop.transformer_lens import bridge_inputs

    mask = torch.ones_like(batch["input_ids"])
    mask[1, -2:] = 0
    ours = vla(**batch, attention_mask=mask).logits
    with torch.no_grad():
        inputs = bridge_inputs(vla, **batch, attention_mask=mask)
        theirs = bridge(**inputs)
    assert inputs["attention_mask"].shape == ours.shape[:2]
    keep = inputs["attention_mask"].bool()
    torch.testing.assert_close(theirs[keep], ours[keep], rtol=0, atol=1e-5)


def test_transformer_lens_export_leaves_the_vla_alone(batch):
    pytest.importorskip("transformer_lens")
    from robosteer.interop.transformer_lens import bridge_inputs, to_transformer_lens

    model = tiny_vla(seed=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    exported = to_transformer_lens(model)
    with torch.no_grad():
        exported.blocks[0].attn.o.original_component.weight.zero_()  # edits the copy only
        assert (exported(**bridge_inputs(model, **batch)) - model(**batch).logits).abs().max() > 1e-4
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    in_place = to_transformer_lens(model, copy=False)  # documented: replaces the VLA's submodules
    assert in_place.original_model is model.language_model
    assert any("_original_component" in k for k in model.state_dict())


def test_transformer_lens_tokenizer_is_a_copy(vla, bridge):
    before = vla.tokenizer.padding_side, len(vla.tokenizer)
    ids = vla.tokenizer("pick up the cube")["input_ids"]
    assert bridge.to_tokens("pick up the cube")[0].tolist() == ids
    assert bridge.tokenizer is not vla.tokenizer
    assert (vla.tokenizer.padding_side, len(vla.tokenizer)) == before


def test_transformer_lens_export_sees_a_parametrized_head_delta(batch):
    pytest.importorskip("transformer_lens")
    from torch.nn.utils import parametrize

    from robosteer.interop.transformer_lens import bridge_inputs, to_transformer_lens

    class AddDelta(torch.nn.Module):
        def __init__(self, delta: torch.Tensor) -> None:
            super().__init__()
            self.delta = torch.nn.Parameter(delta)

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight + self.delta

    model = tiny_vla(seed=0)
    base = model(**batch).logits
    o_proj = model.language_model.model.layers[1].self_attn.o_proj
    parametrize.register_parametrization(o_proj, "weight", AddDelta(0.5 * torch.randn_like(o_proj.weight)))
    adapted, cache = model.run_with_cache(**batch, names_filter="llm.*hook_attn_out")
    exported = to_transformer_lens(model)
    with torch.no_grad():
        logits, tl_cache = exported.run_with_cache(**bridge_inputs(model, **batch))
    assert (adapted.logits - base).abs().max() > 1e-3
    torch.testing.assert_close(logits, adapted.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(tl_cache["blocks.1.hook_attn_out"], cache["llm.blocks.1.attn.hook_attn_out"],
                               rtol=0, atol=1e-5)
    w_o = exported.blocks[1].attn.W_O  # (H, D, d_model): the effective (delta-added) weight
    assert torch.equal(w_o.reshape(-1, w_o.shape[-1]), o_proj.weight.detach().T)


def test_tl_hook_name_maps_llm_sites_only():
    from robosteer.interop.transformer_lens import tl_hook_name

    assert tl_hook_name("llm.blocks.3.attn.hook_z") == "blocks.3.attn.hook_z"
    assert tl_hook_name("llm.blocks.3.attn.hook_attn_out") == "blocks.3.hook_attn_out"
    assert tl_hook_name("llm.blocks.0.hook_resid_pre") == "blocks.0.hook_resid_pre"
    with pytest.raises(ValueError, match="only the 'llm' tower"):
        tl_hook_name("dino.blocks.0.attn.hook_z")


def test_importing_interop_imports_neither_library():
    import subprocess
    import sys

    code = ("import sys, robosteer.interop.nnsight, robosteer.interop.transformer_lens; "
            "print(any(m.split('.')[0] in ('nnsight', 'transformer_lens') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip() == "False"


def test_both_see_a_lora_adapted_llm(batch):
    pytest.importorskip("peft")
    pytest.importorskip("nnsight")
    pytest.importorskip("transformer_lens")
    from peft import LoraConfig, inject_adapter_in_model

    from robosteer.interop.nnsight import read, wrap
    from robosteer.interop.transformer_lens import bridge_inputs, to_transformer_lens

    model = tiny_vla(seed=0)
    base = model(**batch).logits
    targets = ["language_model.model.layers.0.self_attn.v_proj", "language_model.model.layers.1.self_attn.o_proj"]
    inject_adapter_in_model(LoraConfig(r=4, target_modules=targets), model)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: make the adapter do something
            torch.nn.init.normal_(p)
    adapted, cache = model.run_with_cache(**batch, names_filter="llm.*hook_z")
    assert (adapted.logits - base).abs().max() > 1e-3

    exported = to_transformer_lens(model)
    with torch.no_grad():
        logits, tl_cache = exported.run_with_cache(**bridge_inputs(model, **batch))
    torch.testing.assert_close(logits, adapted.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(tl_cache["blocks.1.attn.hook_z"], cache["llm.blocks.1.attn.hook_z"], rtol=0, atol=1e-5)

    nn_model = wrap(copy.deepcopy(model))
    with torch.no_grad(), nn_model.trace(**batch):
        z = read(nn_model, "llm.blocks.1.attn.hook_z").clone().save()
    torch.testing.assert_close(z, cache["llm.blocks.1.attn.hook_z"], rtol=0, atol=1e-6)

"""Activation and attribution patching: invariances that can fail, and agreement between the two."""

import numpy as np
import pytest
import torch

from robosteer.circuits.patching import (PatchingConfig, _aligned, _heads, _metric, _patch_hooks, _z_names,
                                         activation_patching, attribution_patching)
from robosteer.circuits.probes import Probe, build_inputs
from robosteer.models.tiny import tiny_vla


@pytest.fixture(scope="module")
def vla():
    return tiny_vla(seed=4, llm_layers=3, llm_heads=4)


def _frames(rng, instructions, images):
    return [{"image": img, "instruction": ins, "action": rng.uniform(-0.9, 0.9, 7)} for ins, img in zip(instructions, images)]


@pytest.fixture(scope="module")
def probes():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)
    clean = _frames(rng, ["pick up the red cube"] * 3, imgs[:3])
    visual = Probe.from_frames("visual", clean, _frames(rng, ["pick up the red cube"] * 3, imgs[3:]))
    linguistic = Probe.from_frames("linguistic", clean, _frames(rng, ["push the blue ball to the left"] * 3, imgs[:3]))
    return {"visual": visual, "linguistic": linguistic}


def _restore_all(vla, pair, names, sources_from="clean"):
    clean, corrupt = (build_inputs(vla, [f]) for f in pair)
    with torch.no_grad():
        _, cache = vla.run_with_cache(**clean["inputs"], names_filter=names)
        src = _aligned(cache, names, clean["end"], 0)

        def make(name):
            def fn(act, site):
                out = act.clone()
                out[0, corrupt["end"][0]] = src[name]
                return out
            return fn

        patched = _metric(vla, corrupt, [(n, make(n)) for n in names]).item()
        return patched, _metric(vla, clean).item(), _metric(vla, corrupt).item()


@pytest.mark.parametrize("kind", ["visual", "linguistic"])
def test_patching_every_llm_head_restores_clean_metric(vla, probes, kind):
    names = _z_names(_heads(vla, ("llm",)))
    patched, clean, corrupt = _restore_all(vla, probes[kind].pairs[0], names)
    assert abs(clean - corrupt) > 1e-4  # the probe does change the metric
    assert patched == pytest.approx(clean, abs=1e-4)


def test_patching_clean_into_clean_changes_nothing(vla, probes):
    heads = _heads(vla, ("llm", "dino"))
    names = _z_names(heads)
    clean = build_inputs(vla, [probes["visual"].pairs[0][0]])
    with torch.no_grad():
        _, cache = vla.run_with_cache(**clean["inputs"], names_filter=names)
        base = _metric(vla, clean).item()
        batch = {"inputs": {k: v.expand(len(heads), *v.shape[1:]) for k, v in clean["inputs"].items()},
                 "end": clean["end"].expand(len(heads), -1), "targets": clean["targets"].expand(len(heads), -1)}
        patched = _metric(vla, batch, _patch_hooks(heads, _aligned(cache, names, clean["end"], 0), batch["end"]))
    assert torch.allclose(patched, torch.full_like(patched, base), atol=1e-5)


@pytest.mark.parametrize("kind", ["visual", "linguistic"])
def test_attribution_agrees_with_activation_patching(vla, probes, kind):
    act = activation_patching(vla, probes[kind], PatchingConfig(heads_per_batch=5))
    attr = attribution_patching(vla, probes[kind])
    rho = act.spearman(attr, f"activation:{kind}", other_column=f"attribution:{kind}")
    print(f"{kind}: Spearman(attribution, activation) = {rho:.3f}")
    assert rho >= 0.8
    assert [str(h) for h in act.heads] == [str(h) for h in attr.heads] and len(act.heads) == 12


def test_vision_heads_matter_only_for_visual_probe(vla, probes):
    ling = activation_patching(vla, probes["linguistic"], PatchingConfig(towers=("dino",)))
    # same image in both frames: vision heads carry no difference (up to batched-vs-single float rounding)
    assert np.abs(ling.values()).max() < 1e-3
    vis = activation_patching(vla, probes["visual"], PatchingConfig(towers=("dino",)))
    assert np.abs(vis.values()).max() > 1e-3


def test_mean_ablation_scores(vla, probes):
    scores = activation_patching(vla, probes["visual"], PatchingConfig(mode="mean_ablation"))
    assert scores.column_names == ["mean_ablation:visual"]
    assert np.isfinite(scores.values()).all() and np.abs(scores.values()).max() > 0


def test_probe_validation():
    with pytest.raises(ValueError, match="has no pairs"):
        Probe("visual", ())
    with pytest.raises(ValueError, match=r"lacks \['action'\]"):
        Probe("visual", (({"image": 0, "instruction": "x"}, {"image": 0, "instruction": "y", "action": 0}),))
    with pytest.raises(ValueError, match="2 clean frames but 1 corrupted"):
        Probe.from_frames("visual", [{}, {}], [{}])
    with pytest.raises(ValueError, match="mode must be one of"):
        PatchingConfig(mode="noise")


@pytest.fixture(scope="module")
def l1_vla():
    """The same tiny model with a continuous (L1 regression) action head: K*A slots, bidirectional attention."""
    from robosteer.models.loading import build_vla_from_config

    base = tiny_vla(seed=4, llm_layers=3, llm_heads=4)
    cfg = base.config.replace(action_head="l1-regression", action_chunk=1)
    return build_vla_from_config(cfg, tokenizer=base.tokenizer, seed=4).eval()


@pytest.mark.parametrize("kind", ["visual", "linguistic"])
def test_continuous_metric_patching_every_llm_head_restores_clean(l1_vla, probes, kind):
    names = _z_names(_heads(l1_vla, ("llm",)))
    clean_inputs = build_inputs(l1_vla, [probes[kind].pairs[0][0]])
    assert clean_inputs["targets"].shape == (1, 1, 7) and clean_inputs["targets"].dtype.is_floating_point
    patched, clean, corrupt = _restore_all(l1_vla, probes[kind].pairs[0], names)
    assert clean <= 0 and abs(clean - corrupt) > 1e-4  # minus an L1 distance; the probe changes it
    assert patched == pytest.approx(clean, abs=1e-4)


def test_continuous_metric_scorers_run_and_agree(l1_vla, probes):
    act = activation_patching(l1_vla, probes["linguistic"], PatchingConfig(heads_per_batch=5))
    attr = attribution_patching(l1_vla, probes["linguistic"])
    assert np.isfinite(act.columns["activation:linguistic"]).all()
    rho = act.spearman(attr, "activation:linguistic", other_column="attribution:linguistic")
    print(f"continuous metric: Spearman(attribution, activation) = {rho:.3f}")
    assert rho >= 0.5


def test_vision_patching_covers_every_camera_view():
    """With two views per observation a vision tower runs two rows per example: a probe whose pair differs only
    in the wrist view is seen by the vision heads (activation patching equals patching one head of both view rows
    by hand; attribution is not zero, as it would be reading the agentview row alone)."""
    from .test_sequence import oft_frames, tiny_oft

    vla = tiny_oft(chunk=2)
    a, b = oft_frames(2, 2, seed=5)
    corrupt = dict(a, views={"agentview": a["views"]["agentview"], "wrist": b["views"]["wrist"]})
    probe = Probe("wrist", ((a, corrupt),), "visual")
    towers = ("dino", "siglip")
    scores = activation_patching(vla, probe, PatchingConfig(towers=towers, heads_per_batch=3))
    heads = _heads(vla, towers)
    clean, dirty = build_inputs(vla, [a]), build_inputs(vla, [corrupt])
    with torch.no_grad():
        _, cache = vla.run_with_cache(**clean["inputs"], names_filter=_z_names(heads))
        m_clean, m_dirty = _metric(vla, clean).item(), _metric(vla, dirty).item()
        assert abs(m_clean - m_dirty) > 1e-4
        by_hand = []
        for head in heads:
            def patch(act, site, name=head.hook_z, h=head.head):
                out = act.clone()
                out[:2, :, h] = cache[name][:2, :, h]  # both camera views of the one example
                return out
            by_hand.append((_metric(vla, dirty, [(head.hook_z, patch)]).item() - m_dirty) / (m_clean - m_dirty))
    np.testing.assert_allclose(scores.columns["activation:wrist"], by_hand, rtol=0, atol=5e-5)  # batched float32
    assert np.abs(by_hand).max() > 1e-3
    attribution = attribution_patching(vla, probe, towers=towers).columns["attribution:wrist"]
    assert np.isfinite(attribution).all() and np.abs(attribution).max() > 1e-3

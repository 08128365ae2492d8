"""The method on pi0: kNN recording where circuits.pi0 says, activation / attribution patching with the
action-chunk metric, discovery, head masks and head-maps (invariances that can fail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robosteer.circuits.config import DiscoverConfig
from robosteer.circuits.discover import discover
from robosteer.circuits.patching import (PatchingConfig, _aligned, _heads, _metric, _patch_hooks, _repeat, _z_names,
                                         activation_patching, attribution_patching)
from robosteer.circuits.pi0 import NOISE_SEED, recording_inputs
from robosteer.circuits.probes import Probe, build_inputs
from robosteer.circuits.record import RecordConfig, record_heads
from robosteer.masks import HeadMask
from robosteer.models.pi0 import tiny_pi0
from robosteer.models.pi0.frames import frame_inputs
from robosteer.sites import Head

CHUNK = 4
TASKS = ["pick up the red cube", "push the blue block to the left", "open the drawer"]


@pytest.fixture(scope="module")
def pi0():
    return tiny_pi0(seed=3, depth=3)


def frames(n: int = 6, seed: int = 0, views: bool = False, chunk: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base, wrist = rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
        frame = {"image": base, "instruction": TASKS[i % 3], "proprio": rng.uniform(-1, 1, 7),
                 "action": rng.uniform(-1, 1, (CHUNK, 7) if chunk else 7), "episode": i // 2, "step": i % 2}
        if views:
            frame["views"] = {"base_0_rgb": base, "wrist_0_rgb": wrist}
        out.append(frame)
    return out


# --- recording -------------------------------------------------------------------------------
def test_recording_reads_each_tower_where_the_docs_say(pi0):
    data = frames(4, views=True)
    data[1] = {**data[1], "views": {"base_0_rgb": data[1]["image"]}}  # frame 1: the wrist camera is empty
    acts = record_heads(pi0, data[:1] + data[2:], RecordConfig(towers=("llm", "expert", "siglip"), keyframes_only=False,
                                                              position="first_action"), progress=False)
    # the VLM's last layer is left out: its heads' outputs feed nothing
    assert acts.acts["llm"].shape == (3, 2, 4, 8) and acts.acts["expert"].shape == (3, 3, 4, 8)
    assert acts.acts["siglip"].shape == (3, 2, 2, 8)
    np.testing.assert_allclose(acts.actions, np.stack([f["action"][0] for f in data[:1] + data[2:]]))

    one = [data[0]]
    # the released recording pass, computed here by hand: sample the chunk, then one velocity call at t = 0 on it
    inputs = frame_inputs(pi0, one)
    x_0 = pi0.sample(inputs, pi0.noise_like(1, NOISE_SEED))
    kwargs = {"inputs": inputs, "x_t": x_0, "time": torch.zeros(1)}
    _, cache = pi0.run_with_cache(**kwargs)
    _, at_noise = pi0.run_with_cache(inputs=inputs, x_t=pi0.noise_like(1, NOISE_SEED), time=torch.ones(1))
    assert not torch.allclose(cache["expert.blocks.2.attn.hook_z"], at_noise["expert.blocks.2.attn.hook_z"])
    n_lang = int(kwargs["inputs"].attention_mask[0].sum())
    last = 2 * 4 + n_lang - 1  # two cameras of 4 patches, then the language tokens padded right
    torch.testing.assert_close(acts.acts["llm"][0, 1], cache["llm.blocks.1.attn.hook_z"][0, last])
    torch.testing.assert_close(acts.acts["expert"][0, 2], cache["expert.blocks.2.attn.hook_z"][0, 1])
    siglip = cache["siglip.blocks.1.attn.hook_z"]  # (cameras, patches, heads, d): both cameras are real
    torch.testing.assert_close(acts.acts["siglip"][0, 1], siglip.mean(dim=1).mean(dim=0))

    single = record_heads(pi0, [data[1]], RecordConfig(towers=("siglip",), keyframes_only=False), progress=False)
    _, cache = pi0.run_with_cache(**recording_inputs(pi0, [data[1]]))
    # the empty camera is left out of the mean: only the base camera's patches count
    torch.testing.assert_close(single.acts["siglip"][0, 0], cache["siglip.blocks.0.attn.hook_z"][0].mean(dim=0))
    assert not torch.allclose(single.acts["siglip"][0, 0], cache["siglip.blocks.0.attn.hook_z"].mean(dim=(0, 1)))


def test_recording_does_not_depend_on_the_batch(pi0):
    data = frames(5)
    whole = record_heads(pi0, data, RecordConfig(towers=("llm", "expert"), keyframes_only=False, batch_size=5),
                         progress=False)
    pieces = record_heads(pi0, data, RecordConfig(towers=("llm", "expert"), keyframes_only=False, batch_size=2),
                          progress=False)
    for tower in ("llm", "expert"):
        torch.testing.assert_close(whole.acts[tower], pieces.acts[tower], rtol=1e-5, atol=1e-6)


def test_knn_discovery_on_pi0_writes_mask_and_headmap(pi0, tmp_path):
    data = frames(8)
    result = discover(pi0, data, DiscoverConfig(method="knn", towers=("llm", "expert"), top_k=3, keyframes_only=False),
                      out=tmp_path)
    assert 1 <= len(result.mask.heads) <= 3
    assert all(h.tower in ("llm", "expert") for h in result.mask.heads)
    assert not any(h.tower == "llm" and h.layer == 2 for h in result.scores.heads)  # the VLM's last layer is not scored
    assert len(result.scores.heads) == 2 * 4 + 3 * 4
    html = (tmp_path / "headmap.html").read_text()
    assert "plotly" in html.lower() and "expert" in html
    again = HeadMask.from_json(tmp_path / "mask.json", pi0.head_layout)
    assert again.heads == result.mask.heads


# --- patching --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probes():
    clean = frames(3, seed=1, chunk=False)
    other = frames(3, seed=2, chunk=False)
    visual = Probe.from_frames("visual", clean, [{**c, "image": o["image"]} for c, o in zip(clean, other)])
    linguistic = Probe.from_frames("linguistic", clean, [{**c, "instruction": "close the gripper and wait there"}
                                                         for c in clean])
    return {"visual": visual, "linguistic": linguistic}


@pytest.mark.parametrize("kind", ["visual", "linguistic"])
def test_patching_every_expert_head_restores_the_clean_metric(pi0, probes, kind):
    names = _z_names(_heads(pi0, ("expert",)))
    clean, corrupt = (build_inputs(pi0, [f]) for f in probes[kind].pairs[0])
    with torch.no_grad():
        _, cache = pi0.run_with_cache(**clean["inputs"], names_filter=names)
        src = _aligned(cache, names, clean["end"], 0)

        def make(name):
            def fn(act, site):
                out = act.clone()
                out[0] = src[name]
                return out
            return fn
        patched = _metric(pi0, corrupt, [(n, make(n)) for n in names]).item()
        m_clean, m_corrupt = _metric(pi0, clean).item(), _metric(pi0, corrupt).item()
    assert abs(m_clean - m_corrupt) > 1e-3  # the probe does move the one-step estimate
    assert patched == pytest.approx(m_clean, abs=1e-4)
    # the VLM alone does not: its corrupted embeddings reach the expert through every layer's K/V
    names = _z_names(_heads(pi0, ("llm",)))
    with torch.no_grad():
        _, cache = pi0.run_with_cache(**clean["inputs"], names_filter=names)
        src = _aligned(cache, names, clean["end"], 0)
        vlm_only = _metric(pi0, corrupt, [(n, make(n)) for n in names]).item()
    assert vlm_only != pytest.approx(m_clean, abs=1e-4)


def test_patching_clean_into_clean_changes_nothing(pi0, probes):
    heads = _heads(pi0, ("llm", "expert", "siglip"))
    names = _z_names(heads)
    clean = build_inputs(pi0, [probes["visual"].pairs[0][0]])
    with torch.no_grad():
        _, cache = pi0.run_with_cache(**clean["inputs"], names_filter=names)
        base = _metric(pi0, clean).item()
        batch = _repeat(clean, len(heads))
        patched = _metric(pi0, batch, _patch_hooks(heads, _aligned(cache, names, clean["end"], 0), batch["end"]))
    assert patched.shape == (len(heads),)
    torch.testing.assert_close(patched, torch.full_like(patched, base), rtol=1e-5, atol=1e-5)


def test_patching_one_copy_changes_only_that_copy(pi0, probes):
    heads = [Head("expert", 1, 2), Head("siglip", 0, 1), Head("llm", 0, 3)]
    names = _z_names(heads)
    clean, corrupt = (build_inputs(pi0, [f]) for f in probes["visual"].pairs[0])
    with torch.no_grad():
        _, cache = pi0.run_with_cache(**clean["inputs"], names_filter=names)
        base = _metric(pi0, corrupt).item()
        batch = _repeat(corrupt, len(heads))
        patched = _metric(pi0, batch, _patch_hooks(heads, _aligned(cache, names, clean["end"], 0), batch["end"]))
        for c, head in enumerate(heads):  # each copy, patched alone in a batch of one, gives the same value
            alone = _metric(pi0, corrupt, _patch_hooks([head], _aligned(cache, [head.hook_z], clean["end"], 0),
                                                       corrupt["end"])).item()
            assert patched[c].item() == pytest.approx(alone, rel=1e-5, abs=1e-5)
            assert alone != pytest.approx(base, abs=1e-6), head


@pytest.mark.parametrize("kind", ["visual", "linguistic"])
def test_attribution_agrees_with_activation_patching_on_the_expert(pi0, probes, kind):
    act = activation_patching(pi0, probes[kind], PatchingConfig(towers=("expert",), heads_per_batch=5), progress=False)
    attr = attribution_patching(pi0, probes[kind], towers=("expert",))
    assert [str(h) for h in act.heads] == [str(h) for h in attr.heads] and len(act.heads) == 12
    rho = act.spearman(attr, f"activation:{kind}", other_column=f"attribution:{kind}")
    print(f"pi0 {kind}: Spearman(attribution, activation) = {rho:.3f}")
    assert rho >= 0.6


def test_every_tower_scores_and_mean_ablation_runs(pi0, probes):
    towers = ("llm", "expert", "siglip")
    act = activation_patching(pi0, probes["visual"], PatchingConfig(towers=towers), progress=False)
    assert len(act.heads) == 2 * 4 + 3 * 4 + 2 * 2 and np.isfinite(act.values()).all()
    ablated = activation_patching(pi0, probes["visual"], PatchingConfig(towers=towers, mode="mean_ablation"),
                                  progress=False)
    assert np.isfinite(ablated.values()).all() and np.abs(ablated.values()).max() > 0
    result = discover(pi0, frames(4), DiscoverConfig(method="attribution", towers=towers, top_k=4),
                      probes=list(probes.values()))
    assert len(result.mask.heads) == 4


def test_chunk_targets_must_fit(pi0):
    bad = frames(1, chunk=False)
    bad[0]["action"] = np.zeros((CHUNK + 1, 7))
    with pytest.raises(ValueError, match=r"action chunks \(rows <= 4, 7\)"):
        build_inputs(pi0, bad)


def test_cma_says_it_needs_an_action_token(pi0):
    with pytest.raises(ValueError, match="first action token.*knn, activation or attribution"):
        discover(pi0, frames(4), DiscoverConfig(method="cma", top_k=2, keyframes_only=False))

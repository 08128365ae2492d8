"""pi0's heads as sites (invariances that can fail) and the loader's errors on bad folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import robosteer
from tests.conftest import fixture_path

TASKS = ["pick up the red cube", "open the top drawer and put the spoon inside"]


@pytest.fixture(scope="module")
def pi0():
    return robosteer.load_vla(fixture_path("pi0-tiny-a"))


@pytest.fixture(scope="module")
def batch():
    ref = np.load(fixture_path("pi0-tiny-a/expected.npz"))
    return dict(images={"base_0_rgb": ref["images_cam0"]}, state=ref["state_raw"], instruction=TASKS,
                noise=ref["noise"], num_steps=3)


def test_caching_changes_nothing(pi0, batch):
    plain = pi0(**batch).actions
    out, cache = pi0.run_with_cache(**batch)
    assert torch.equal(out.actions, plain)
    assert {"llm.blocks.0.attn.hook_z", "expert.blocks.2.attn.hook_z", "siglip.blocks.1.attn.hook_z"} <= set(cache.keys())
    assert cache["llm.blocks.1.attn.hook_z"].shape == (2, 304, 8, 8)
    assert cache["expert.blocks.1.attn.hook_z"].shape == (2, 11, 8, 8)
    assert cache["siglip.blocks.0.attn.hook_z"].shape == (2, 256, 2, 16)


def test_patching_a_head_with_its_own_activation_changes_nothing(pi0, batch):
    plain = pi0(**batch).actions
    _, cache = pi0.run_with_cache(**batch, names_filter="llm.blocks.1.attn.hook_z")
    own = cache["llm.blocks.1.attn.hook_z"]

    def patch(z, site):
        z = z.clone()
        z[:, :, 3] = own[:, :, 3]
        return z

    patched = pi0.run_with_hooks(**batch, fwd_hooks=[("llm.blocks.1.attn.hook_z", patch)]).actions
    assert torch.equal(patched, plain)


@pytest.mark.parametrize("site", ["llm.blocks.1.attn.hook_z", "expert.blocks.0.attn.hook_z", "siglip.blocks.0.attn.hook_z"])
def test_zero_ablating_one_head_changes_the_actions(pi0, batch, site):
    plain = pi0(**batch).actions

    def ablate(z, _):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    ablated = pi0.run_with_hooks(**batch, fwd_hooks=[(site, ablate)]).actions
    assert (ablated - plain).abs().max() > 1e-4


def test_the_last_vlm_layer_heads_cannot_move_the_actions(pi0, batch):
    """The expert reads only the prefix K/V, so the last VLM layer's head outputs feed nothing (unused_modules)."""
    plain = pi0(**batch).actions
    ablated = pi0.run_with_hooks(**batch, fwd_hooks=[("llm.blocks.2.attn.hook_z", lambda z, _: torch.zeros_like(z))]).actions
    assert torch.equal(ablated, plain)
    assert "model.paligemma_with_expert.paligemma.model.language_model.layers.2.self_attn.o_proj" in pi0.unused_modules()


def test_pattern_hook_sees_the_prefix_lm_mask(pi0, batch):
    seen = {}

    def keep(p, site):
        seen[str(site)] = p

    plain = pi0(**batch).actions
    out = pi0.run_with_hooks(**batch, fwd_hooks=[("llm.blocks.0.attn.hook_pattern", keep),
                                                 ("expert.blocks.0.attn.hook_pattern", keep)])
    assert torch.allclose(out.actions, plain)
    vlm = seen["llm.blocks.0.attn.hook_pattern"]  # [B, H, P, P]
    assert vlm.shape == (2, 8, 304, 304)
    # the first sample has 7 valid language tokens: keys 263.. are padding and get no weight from valid queries
    assert vlm[0, :, :263, 263:].abs().max() < 1e-30
    expert = seen["expert.blocks.0.attn.hook_pattern"]  # [B, H, 11, 304 + 11]
    assert expert.shape == (2, 8, 11, 315)
    assert expert[:, :, 0, 305:].abs().max() < 1e-30  # the state token sees no action token
    assert (expert[:, :, 1:, 304:] > 0).all()  # action tokens see the state and each other


def test_instruction_and_ids_give_the_same_actions(pi0, batch):
    inputs = pi0.prepare_inputs(batch["images"], batch["state"], instruction=TASKS)
    by_ids = {**batch, "instruction": None, "input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask}
    assert torch.equal(pi0(**by_ids).actions, pi0(**batch).actions)


# --- errors --------------------------------------------------------------------------------
def _copy(tmp_path):
    folder = tmp_path / "pi0"
    shutil.copytree(fixture_path("pi0-tiny-a"), folder)
    for path in folder.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return folder


def test_a_folder_of_another_lerobot_policy_is_refused(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["type"] = "act"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json.*'type'.*lerobot 'act' policy"):
        robosteer.load_vla(folder)


def test_missing_processor_statistics_are_named(tmp_path):
    folder = _copy(tmp_path)
    (folder / "policy_preprocessor_step_6_normalizer_processor.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="observation.state statistics"):
        robosteer.load_vla(folder)
    folder = _copy(tmp_path / "b")
    (folder / "policy_postprocessor.json").unlink()
    with pytest.raises(FileNotFoundError, match="policy_postprocessor.json"):
        robosteer.load_vla(folder)
    folder = _copy(tmp_path / "c")
    from safetensors.torch import load_file, save_file

    stats = folder / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    tensors = {k: v for k, v in load_file(str(stats)).items() if k != "action.std"}
    save_file(tensors, str(stats))
    with pytest.raises(ValueError, match=r"action.std.*missing"):
        robosteer.load_vla(folder)


def test_an_undeclared_camera_and_a_wrong_state_size_are_clear(pi0, batch):
    with pytest.raises(ValueError, match=r"camera 'wrist' is not declared.*\['base_0_rgb'\]"):
        pi0.predict_action_chunk(images={"wrist": batch["images"]["base_0_rgb"]}, state=batch["state"], instruction=TASKS)
    with pytest.raises(ValueError, match=r"state must be \[B, 8\].*got shape \(2, 9\)"):
        pi0.predict_action_chunk(images=batch["images"], state=np.zeros((2, 9), np.float32), instruction=TASKS)
    with pytest.raises(ValueError, match="noise must be"):
        pi0.predict_action_chunk(images=batch["images"], state=batch["state"], instruction=TASKS, noise=np.zeros((2, 3, 32)))


def test_a_mismatched_checkpoint_names_the_key(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["max_action_dim"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape mismatch for model.action_in_proj.weight"):
        robosteer.load_vla(folder)
    config["paligemma_variant"] = "gemma_9b"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tiny_dims.json.*gemma_variants.gemma_9b"):
        robosteer.load_vla(folder)
    (folder / "tiny_dims.json").unlink()
    with pytest.raises(ValueError, match=r"paligemma_variant.*unknown Gemma variant 'gemma_9b'"):
        robosteer.load_vla(folder)

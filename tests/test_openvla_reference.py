"""The port reproduces the original OpenVLA code's outputs on its own tiny random checkpoint."""

import numpy as np
import pytest
import torch

import robosteer

UNNORM_KEYS = ["tiny_franka", None, "tiny_franka"]  # as the fixture's cases.json records


@pytest.fixture(scope="module")
def ref(openvla_tiny_a):
    vla = robosteer.load_vla(openvla_tiny_a, dtype=torch.float32)
    return vla, np.load(openvla_tiny_a / "expected.npz")


def test_preprocess_matches_reference(ref):
    vla, e = ref
    pv = vla.preprocess(list(e["images"]))
    assert pv.dtype == torch.float32 and pv.shape == (2, 6, 224, 224)
    assert (pv - torch.from_numpy(e["pixel_values"])).abs().max().item() <= 1e-5


def test_preprocess_non_224_inputs(openvla_tiny_a):
    from tests.conftest import fixture_path

    e = np.load(fixture_path("processor", "expected_processor.npz"))
    vla = robosteer.load_vla(openvla_tiny_a, dtype=torch.float32, load_tokenizer=False)
    for i in range(2):
        pv = vla.preprocess(e[f"image{i}"])
        assert (pv - torch.from_numpy(e[f"pixel_values{i}"])).abs().max().item() <= 1e-5


@pytest.mark.parametrize("case", [0, 1, 2])
def test_forward_logits_and_hidden_match(ref, case):
    vla, e = ref
    img = int(e[f"case{case}_image_index"])
    ids = torch.from_numpy(e[f"case{case}_input_ids_full"])
    pv = torch.from_numpy(e["pixel_values"][img : img + 1])
    with torch.no_grad():
        logits = vla(input_ids=ids, pixel_values=pv).logits[0]
    assert logits.shape[0] == 256 + ids.shape[1]
    assert (logits[-1] - torch.from_numpy(e[f"case{case}_logits_last"])).abs().max().item() <= 1e-3
    cols = torch.from_numpy(e["logit_cols"])
    assert (logits[:, cols] - torch.from_numpy(e[f"case{case}_logits_cols"])).abs().max().item() <= 1e-3
    assert torch.equal(logits.argmax(-1), torch.from_numpy(e[f"case{case}_logits_argmax"]))


def test_intermediate_features_match(ref):
    vla, e = ref
    pv = torch.from_numpy(e["pixel_values"][:1])
    with torch.no_grad():
        dino = vla.vision_backbone.featurizer(pv[:, :3])[0]
        siglip = vla.vision_backbone.fused_featurizer(pv[:, 3:])[0]
        proj = vla.projector(torch.cat([dino, siglip], -1))
    assert (dino - torch.from_numpy(e["case0_dino_patches"])).abs().max().item() <= 1e-3
    assert (siglip - torch.from_numpy(e["case0_siglip_patches"])).abs().max().item() <= 1e-3
    assert (proj - torch.from_numpy(e["case0_projector_features"])).abs().max().item() <= 1e-3


@pytest.mark.parametrize("case", [0, 1, 2])
@pytest.mark.parametrize("use_cache", [True, False])
def test_predict_action_matches(ref, case, use_cache):
    vla, e = ref
    img = int(e[f"case{case}_image_index"])
    actions, tokens = vla.predict_action(
        pixel_values=torch.from_numpy(e["pixel_values"][img : img + 1]),
        input_ids=torch.from_numpy(e[f"case{case}_input_ids"]),
        unnorm_key=UNNORM_KEYS[case], return_tokens=True, use_cache=use_cache)
    assert tokens.tolist() == e[f"case{case}_generated_ids"].tolist()
    assert np.abs(vla.action_tokenizer.decode(tokens) - e[f"case{case}_normalized_actions"]).max() <= 1e-9
    assert np.abs(actions - e[f"case{case}_actions"]).max() <= 1e-5


def test_predict_action_from_raw_image(ref):
    """The processor path (uint8 image in) gives the same tokens as the reference pixel_values."""
    vla, e = ref
    _, tokens = vla.predict_action(e["images"][0], input_ids=torch.from_numpy(e["case0_input_ids"]),
                                   unnorm_key="tiny_franka", return_tokens=True)
    assert tokens.tolist() == e["case0_generated_ids"].tolist()


def test_appends_prompt_suffix_like_reference(ref):
    vla, e = ref
    ids = torch.from_numpy(e["case1_input_ids"])
    assert ids[0, -1].item() != 29871
    assert torch.equal(vla.with_prompt_suffix(ids), torch.from_numpy(e["case1_input_ids_full"]))

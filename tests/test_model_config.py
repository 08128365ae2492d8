"""Configs: sizes from timm ids, tiny factories, validation, config.json round trips; the tokenizer layout."""

import json

import numpy as np
import pytest

from robosteer.models.action_tokenizer import ActionTokenizer
from robosteer.models.config import VLAConfig, ViTConfig, tower_from_timm
from robosteer.models.tiny import tiny_config
from robosteer.models.tokenizer import build_tokenizer, tokenizer_info
from tests.conftest import fixture_path


def test_real_config_implies_real_sizes():
    cfg = VLAConfig.from_hf_dict(json.loads(fixture_path("openvla-7b-config.json").read_text()))
    dino, siglip = cfg.towers
    assert (dino.width, dino.depth, dino.heads, dino.mlp_dim, dino.reg_tokens) == (1024, 24, 16, 4096, 4)
    assert (siglip.width, siglip.depth, siglip.heads, siglip.mlp_dim, siglip.class_token) == (1152, 27, 16, 4304, False)
    kw = cfg.llama_kwargs()
    assert kw["rms_norm_eps"] == 1e-6 and kw["num_key_value_heads"] == 32 and kw["vocab_size"] == 32064
    assert cfg.to_hf_dict() == json.loads(fixture_path("openvla-7b-config.json").read_text())


def test_tiny_overrides_follow_fixture_convention():
    cfg = VLAConfig.from_hf_dict(json.loads(fixture_path("openvla-tiny-a", "config.json").read_text()))
    assert [(t.width, t.depth, t.heads, t.mlp_dim) for t in cfg.towers] == [(48, 3, 4, 192), (40, 3, 2, 149)]


@pytest.mark.parametrize("kw", [dict(image_size=64, patch_size=8), dict(fused=False, dino=(64, 4, 8)),
                                dict(llm_layers=6, llm_heads=8, llm_dim=64)])
def test_tiny_config_round_trips_through_json(kw):
    cfg, _ = tiny_config(**kw)
    again = VLAConfig.from_hf_dict(json.loads(json.dumps(cfg.to_hf_dict())))
    assert again == cfg


@pytest.mark.parametrize("bad, message", [
    (dict(kind="clip"), "kind must be 'dino' or 'siglip'"),
    (dict(width=50, heads=4), "not divisible"),
    (dict(image_size=30, patch_size=8), "not a multiple of patch_size"),
    (dict(depth=1), "depth >= 2"),
])
def test_vit_config_validation(bad, message):
    base = dict(kind="dino", image_size=32, patch_size=8, width=48, depth=3, heads=4, mlp_dim=96)
    with pytest.raises(ValueError, match=message):
        ViTConfig(**{**base, **bad})


def test_unknown_override_is_named():
    with pytest.raises(ValueError, match=r"unsupported timm override\(s\) \['qk_norm'\]"):
        tower_from_timm("vit_so400m_patch14_siglip_224", 224, {"qk_norm": True})


def test_tokenizer_layout_and_determinism():
    a, b = build_tokenizer(), build_tokenizer()
    info = tokenizer_info(a)
    assert info == tokenizer_info(b)
    assert a.get_vocab() == b.get_vocab()
    ids = a("In: What action should the robot take to pick up the crimson mug?\nOut:")["input_ids"]
    assert ids[0] == 1 and a.unk_token_id not in ids
    assert a.convert_ids_to_tokens(info.prompt_suffix_token_id) == "\u2581"
    assert a.decode(ids, skip_special_tokens=True).strip().startswith("In: What action")


def test_action_tokenizer_matches_openvla_rules():
    tok = ActionTokenizer(vocab_end=32000)
    assert tok.encode(np.array([-1.0, 1.0])).tolist() == [31999, 31744]
    # ids below the range clip to the top centre, ids at or above vocab_end to the bottom one
    centres = tok.bin_centers
    assert tok.decode(np.array([31000, 32010, 31744, 31745])).tolist() == [centres[254], centres[0], centres[254], centres[254]]
    values = np.linspace(-0.99, 0.99, 50)
    assert np.abs(tok.decode(tok.encode(values)) - values).max() <= 2 / 255

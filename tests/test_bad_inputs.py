"""Bad input gets a clear error naming the file, the field and what was expected (issue #22)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import robosteer
from robosteer.circuits.knn import KNNConfig, knn_scores
from robosteer.circuits.random_baseline import random_scores
from robosteer.cli import main
from robosteer.files import FileFormatError
from robosteer.masks import HeadMask
from robosteer.models.loading import build_vla_from_config
from robosteer.sites import HeadLayout
from tests.conftest import REPO

LAYOUT = HeadLayout({"llm": (2, 4)})



def edit_config(folder: Path, edit) -> Path:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))
    return path


# 1. a field of the wrong type
def test_non_integer_n_action_bins_names_file_and_field(ckpt):
    edit_config(ckpt, lambda c: c.update(n_action_bins="abc"))
    with pytest.raises(FileFormatError, match=r"config\.json: field 'n_action_bins': expected an integer >= 1, got 'abc'"):
        robosteer.load_vla(ckpt)


# 2. unknown or misspelt fields: a warning, an error with strict=True
@pytest.mark.parametrize("edit, field, shown", [
    (lambda c: c["text_config"].update(num_hiden_layers=2), "text_config.num_hiden_layers",
     r"num_hiden_layers \(did you mean 'num_hidden_layers'\?\)"),
    (lambda c: c.update(vision_backbone_id="dinosiglip-vit-xl"), "vision_backbone_id",
     r"vision_backbone_id='dinosiglip-vit-xl' \(expected one of \['dinosiglip-vit-so-224px'"),
])
def test_unknown_config_fields_warn_and_strict_refuses(ckpt, edit, field, shown):
    path = edit_config(ckpt, edit)
    with pytest.warns(UserWarning, match=r"config\.json: unknown field\(s\).*" + shown):
        build_vla_from_config(path, device="meta")
    with pytest.raises(FileFormatError, match=rf"config\.json: field '{re.escape(field)}': unknown field.*" + shown):
        build_vla_from_config(path, device="meta", strict=True)


def test_load_vla_strict_refuses_a_misspelt_field(ckpt):
    edit_config(ckpt, lambda c: c.update(n_action_binz=256))
    with pytest.raises(FileFormatError, match=r"field 'n_action_binz'.*did you mean 'n_action_bins'"):
        robosteer.load_vla(ckpt, strict=True)


def test_known_configs_load_without_warnings(openvla_tiny_a, recwarn):
    for path in (openvla_tiny_a, REPO / "tests" / "fixtures" / "openvla-7b-config.json",
                 REPO / "tests" / "fixtures" / "openvla-oft-tiny-a"):
        build_vla_from_config(path, device="meta", strict=True)
    assert not [w for w in recwarn if "unknown field" in str(w.message)]


# 3. no text_config
def test_missing_text_config_says_why(ckpt):
    edit_config(ckpt, lambda c: c.pop("text_config"))
    with pytest.raises(FileFormatError, match=r"config\.json: field 'text_config': missing; expected the Llama settings"):
        robosteer.load_vla(ckpt)


# 4. malformed mask JSON
@pytest.mark.parametrize("text, message", [
    ("{not json", r"bad\.json: head mask is not valid JSON \(Expecting"),
    ("[1, 2]", r"bad\.json: expected a JSON object \(a robosteer\.head_mask file\), got list"),
    ('{"format": "robosteer.head_mask", "version": 1, "layout": {"llm": [2, 4]}, "heads": "llm.L0H0"}',
     r"bad\.json: field 'heads': expected a list of head names"),
])
def test_malformed_mask_json_names_the_file(tmp_path, text, message):
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(FileFormatError, match=message):
        HeadMask.from_json(tmp_path / "bad.json")


# 5. proprio of the wrong length
def test_wrong_proprio_length_is_named():
    from robosteer.models.tiny import tiny_vla

    vla = tiny_vla(seed=0, proprio_dim=7)
    image = np.zeros((28, 28, 3), np.uint8)
    with pytest.raises(ValueError, match=r"proprio must have shape \(7,\) or \(B, 7\).*got shape \(5,\)"):
        vla.predict_action(image, "pick up the cube", proprio=np.zeros(5))


# 6. images smaller than one patch
@pytest.mark.parametrize("side", [0, 1, 13])
def test_image_smaller_than_a_patch_is_refused(tiny_vla, side):
    with pytest.raises(ValueError, match=rf"image 0: {side}x{side} pixels is smaller than one 14x14 patch; "
                                         r"expected an \(H, W, 3\) image with H, W >= 14"):
        tiny_vla.predict_action(np.zeros((side, side, 3), np.uint8), "pick up the cube")


# 7. robosteer info on damaged checkpoints
def test_info_reports_a_truncated_checkpoint(ckpt, capsys):
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    assert main(["info", str(ckpt)]) == 2
    assert re.search(r"model\.safetensors is not a readable safetensors file .*not fully covered", capsys.readouterr().err)


def test_info_on_a_pickle_file_says_it_is_not_json(tmp_path, capsys):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    assert main(["info", str(tmp_path / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert "model.pt: model config is not a JSON text file" in err and "pickle" in err


def test_info_checks_the_weights_of_a_good_checkpoint(openvla_tiny_a, capsys):
    assert main(["info", str(openvla_tiny_a)]) == 0
    assert "weights: 130 tensors in 1 file(s), names and shapes match config.json" in capsys.readouterr().out


# 8. a pickle given as a safetensors mask
def test_load_safetensors_on_a_pickle_is_a_clear_error(tmp_path):
    torch.save({"llm": torch.zeros(2, 4, dtype=torch.bool)}, tmp_path / "mask.safetensors")
    with pytest.raises(FileFormatError, match=r"mask\.safetensors: not a readable safetensors head mask "
                                              r"\(SafetensorError: .*\); expected a file written by HeadMask"):
        HeadMask.load_safetensors(tmp_path / "mask.safetensors")


# 9. float episode ids
def test_knn_refuses_non_integral_float_episode_ids():
    rng = np.random.default_rng(0)
    acts, actions = {"llm": rng.normal(size=(8, 2, 4, 3))}, rng.normal(size=(8, 2))
    config = KNNConfig(k_grid=(1, 2))
    with pytest.raises(ValueError, match=r"episodes must be integer ids .*non-integral values such as \[0\.5, 0\.5"):
        knn_scores(acts, actions, np.repeat([0.5, 1.5, 2.5, 3.5], 2), config=config)
    ints = knn_scores(acts, actions, np.repeat([0, 1, 2, 3], 2), config=config)
    floats = knn_scores(acts, actions, np.repeat([0.0, 1.0, 2.0, 3.0], 2), config=config)
    assert np.array_equal(ints.values("knn"), floats.values("knn"))


# 10. select(k=0)
@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_select_refuses_k_below_one(k):
    with pytest.raises(ValueError, match=rf"select: k must be an integer >= 1 \(how many heads to keep\), got {k}"):
        HeadMask.select(random_scores(LAYOUT, seed=0), k=k)


# 11. docstrings cite files that exist
def test_sources_cite_only_docs_that_exist():
    cited = set()
    for path in (REPO / "robosteer").rglob("*.py"):
        text = path.read_text()
        assert "OPENVLA.md" not in text, f"{path} cites OPENVLA.md, which is not in the repository"
        cited |= set(re.findall(r"docs/[\w/.-]+\.md", text))
    missing = sorted(c for c in cited if not (REPO / c).is_file())
    assert not missing, f"robosteer cites docs that do not exist: {missing}"

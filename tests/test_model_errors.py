"""Bad input gets a clear error that names the problem."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import robosteer
from robosteer.models.tiny import default_norm_stats



def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        robosteer.load_vla(tmp_path / "nope")


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="model config not found"):
        robosteer.load_vla(ckpt)


def test_corrupt_config(ckpt):
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: model config is not valid JSON"):
        robosteer.load_vla(ckpt)


def test_missing_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights in"):
        robosteer.load_vla(ckpt)


def test_corrupt_weights(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        robosteer.load_vla(ckpt)


def test_truncated_weights(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        robosteer.load_vla(ckpt)


def test_missing_and_unexpected_keys_are_named(ckpt):
    sd = load_file(str(ckpt / "model.safetensors"))
    sd["projector.fc9.weight"] = sd.pop("projector.fc3.weight")
    save_file(sd, str(ckpt / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        robosteer.load_vla(ckpt)
    msg = str(err.value)
    assert "missing 1 key(s), first: ['projector.fc3.weight']" in msg
    assert "unexpected 1 key(s), first: ['projector.fc9.weight']" in msg


def test_shape_mismatch_is_named(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] = 48
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"shape mismatch for language_model.model.layers.0.mlp.gate_proj.weight: "
                                         r"checkpoint has \[40, 16\], model expects \[48, 16\]"):
        robosteer.load_vla(ckpt)


def test_missing_shard_is_named(ckpt):
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        robosteer.load_vla(ckpt)


def test_pickle_refused_unless_opted_in(ckpt):
    sd = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(sd, ckpt / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle files can run code.*allow_pickle=True"):
        robosteer.load_vla(ckpt)
    vla = robosteer.load_vla(ckpt, allow_pickle=True)
    assert torch.equal(vla.state_dict()["projector.fc3.weight"], sd["projector.fc3.weight"])


def test_unknown_vision_tower(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["timm_model_ids"][0] = "vit_giant_patch99"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown vision tower 'vit_giant_patch99'; known timm ids"):
        robosteer.load_vla(ckpt)


def test_unnorm_key_errors(ckpt, tiny_vla):
    with pytest.raises(ValueError, match=r"unknown unnorm_key 'bridge'; valid keys: \['tiny_franka'\]"):
        tiny_vla.norm_stats("bridge")
    stats = {**default_norm_stats(key="a"), **default_norm_stats(key="b")}
    (ckpt / "dataset_statistics.json").write_text(json.dumps(stats))
    vla = robosteer.load_vla(ckpt, dtype=torch.float32)
    e = np.load(ckpt / "expected.npz")
    with pytest.raises(ValueError, match=r"trained on 2 datasets; pass unnorm_key= one of \['a', 'b'\]"):
        vla.predict_action(pixel_values=torch.from_numpy(e["pixel_values"][:1]), input_ids=torch.from_numpy(e["case0_input_ids"]))


@pytest.mark.parametrize("image, message", [
    (np.zeros((28, 28, 3), dtype=np.float32), "expected dtype uint8"),
    (np.zeros((28, 28), dtype=np.uint8), r"must be \(H, W, 3\)"),
    (np.zeros((28, 28, 4), dtype=np.uint8), r"expected shape \(H, W, 3\) RGB, got \(28, 28, 4\)"),
    ("image.png", "expected a PIL image"),
])
def test_bad_images(tiny_vla, image, message):
    with pytest.raises(ValueError, match=message):
        tiny_vla.preprocess(image)


def test_wrong_pixel_values_shape(tiny_vla):
    ids = tiny_vla.tokenize("lift the cube")
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(B, 6, 28, 28\).*got \(1, 6, 32, 32\)"):
        tiny_vla(input_ids=ids, pixel_values=torch.zeros(1, 6, 32, 32))
    with pytest.raises(ValueError, match=r"got \(1, 3, 28, 28\)"):
        tiny_vla(input_ids=ids, pixel_values=torch.zeros(1, 3, 28, 28))


def test_no_tokenizer_needs_input_ids(openvla_tiny_a):
    vla = robosteer.load_vla(openvla_tiny_a, dtype=torch.float32)
    assert vla.tokenizer is None
    with pytest.raises(ValueError, match="no tokenizer: pass input_ids"):
        vla.predict_action(np.zeros((224, 224, 3), np.uint8), "pick up the cube")

"""save_pretrained -> load_vla is bit-exact, in the reference format, single-file and sharded."""

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import robosteer
from robosteer.models.tiny import tiny_vla


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_reference_checkpoint_round_trip_bit_exact(openvla_tiny_a, tmp_path):
    vla = robosteer.load_vla(openvla_tiny_a)  # stored dtype: bf16 stays bf16
    assert vla.dtype == torch.bfloat16
    vla.save_pretrained(tmp_path / "copy")
    with safe_open(str(openvla_tiny_a / "model.safetensors"), "pt") as f, \
            safe_open(str(tmp_path / "copy" / "model.safetensors"), "pt") as g:
        assert list(f.keys()) == list(g.keys()) or sorted(f.keys()) == sorted(g.keys())
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), g.get_tensor(key)), key
    original = json.loads((openvla_tiny_a / "config.json").read_text())
    written = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert written == original  # every field of the original config survives
    again = robosteer.load_vla(tmp_path / "copy")
    _same_state(vla, again)


def test_tiny_round_trip_with_tokenizer(tmp_path):
    vla = tiny_vla(seed=3, proprio_dim=7)
    out = vla.save_pretrained(tmp_path / "m")
    again = robosteer.load_vla(out)
    _same_state(vla, again)
    assert again.config == vla.config
    assert again.tokenizer("pick up the red cube")["input_ids"] == vla.tokenizer("pick up the red cube")["input_ids"]
    img = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    kw = dict(proprio=np.zeros(7), return_tokens=True)
    assert torch.equal(vla.predict_action(img, "lift the cube", **kw)[1], again.predict_action(img, "lift the cube", **kw)[1])


def test_sharded_save_loads_back(tmp_path):
    vla = tiny_vla(seed=1)
    vla.save_pretrained(tmp_path / "sharded", max_shard_size=200_000)
    files = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(files) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    _same_state(vla, robosteer.load_vla(tmp_path / "sharded"))


def test_save_is_atomic_and_replaces(tmp_path, monkeypatch):
    vla = tiny_vla(seed=1)
    target = vla.save_pretrained(tmp_path / "m")
    digest = hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()
    from robosteer.models import saving

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(saving, "write_json_atomic", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_vla(seed=2).save_pretrained(target)
    # the failed save left the earlier checkpoint whole and no partial folders behind
    assert hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_dtype_conversion_on_load(openvla_tiny_a):
    vla = robosteer.load_vla(openvla_tiny_a, dtype="float32")
    assert vla.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in vla.parameters())


def test_saved_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tiny_vla(seed=1).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name

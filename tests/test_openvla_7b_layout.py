"""The full openvla-7b configuration builds on the meta device with the real checkpoint's names and shapes."""

import resource

import torch

import robosteer
from tests.conftest import fixture_path


def test_7b_meta_build_matches_real_keys():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    vla = robosteer.build_vla_from_config(fixture_path("openvla-7b-config.json"), device="meta", dtype="bfloat16")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    lines = [line.split("\t") for line in fixture_path("openvla-7b-keys.txt").read_text().strip().splitlines()]
    expected = [(key, tuple(int(x) for x in shape.strip("[]").split(", ")), dtype) for key, shape, dtype in lines]
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in vla.state_dict().items()]
    assert got == expected  # same names, order, shapes and dtype
    assert sum(v.numel() for v in vla.state_dict().values()) == 7_541_237_184
    assert all(p.device.type == "meta" for p in vla.parameters())
    assert grown_mb < 200, f"building on meta allocated {grown_mb:.0f} MB"


def test_7b_head_layout():
    vla = robosteer.build_vla_from_config(fixture_path("openvla-7b-config.json"), device="meta")
    layout = vla.head_layout
    assert layout.to_dict() == {"llm": [32, 32], "dino": [24, 16], "siglip": [27, 16]}
    assert [len(layout.heads(t)) for t in ("llm", "dino", "siglip")] == [1024, 384, 432]
    assert vla.config.towers[1].mlp_dim == 4304 and vla.config.n_patches == 256

"""The shipped default policy loads, has the documented shape, and gives the recorded action."""

import json
from pathlib import Path

import numpy as np
import torch

import robosteer
from robosteer.models.assets import default_checkpoint_dir
from robosteer.models.default import DEFAULT_SHAPE

DATA = Path(__file__).resolve().parent / "data"


def test_default_policy_shape_and_size():
    path = default_checkpoint_dir()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= 20 * 2**20, f"the shipped policy takes {size / 2**20:.1f} MB"
    vla = robosteer.load_vla("default")
    assert vla.head_layout.shape("llm") == (DEFAULT_SHAPE["llm_layers"], DEFAULT_SHAPE["llm_heads"])
    assert len(vla.sites("llm")) >= 48 and vla.config.n_patches <= 64 and vla.config.proprio_dim == 7
    assert vla.tokenizer is not None and "robosteer_sim" in vla.config.norm_stats
    # the recipe of docs/default_policy.md: OpenVLA-OFT's switches (two views, L1 regression head, FiLM)
    assert vla.config.n_views == 2 and vla.config.action_head == "l1-regression" and vla.config.use_film


def test_known_observation_gives_recorded_action():
    """The first frame of lift/base at the first evaluation seed (both views) gives the recorded action."""
    obs = np.load(DATA / "default_policy_observation.npz", allow_pickle=False)
    expected = json.loads((DATA / "default_policy_tokens.json").read_text())
    vla = robosteer.load_vla("default", dtype=torch.float32)
    assert vla.config.n_views == len(expected["cameras"]) == obs["images"].shape[0]
    if "tokens" in expected:  # a token policy
        action, tokens = vla.predict_action(obs["images"][0], str(obs["instruction"]), proprio=obs["proprio"],
                                            return_tokens=True)
        assert tokens.tolist() == expected["tokens"]
    else:
        action = vla.predict_action(obs["images"], str(obs["instruction"]), proprio=obs["proprio"])
    assert np.allclose(action, expected["action"], atol=1e-5)

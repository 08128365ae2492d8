"""Greedy decoding with the KV cache equals the no-cache loop, on many tiny architectures."""

import warnings

import numpy as np
import pytest
import torch

from robosteer.models.generation import greedy_action_tokens
from robosteer.models.tiny import tiny_vla

ARCHS = {
    "fused": dict(),
    "dino-only": dict(fused=False),
    "gqa": dict(llm_heads=4, llm_kv_heads=2),
    "proprio": dict(proprio_dim=7),
    "gelu-mlp-32px": dict(projector="gelu-mlp", image_size=32, patch_size=8),
}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_cache_equals_no_cache(name):
    vla = tiny_vla(seed=11, **ARCHS[name])
    size = vla.config.image_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    pv = vla.preprocess(list(images))
    ids = vla.tokenize("put the red cube on the green plate").expand(3, -1)
    prop = torch.from_numpy(rng.uniform(-1, 1, (3, 7))).float() if vla.config.proprio_dim else None
    with warnings.catch_warnings():  # the cache is passed under the name this transformers takes, not a deprecated one
        warnings.filterwarnings("error", message=".*past_key_values.*", category=FutureWarning)
        with_cache = greedy_action_tokens(vla, ids, pv, 7, proprio=prop, use_cache=True)
    without = greedy_action_tokens(vla, ids, pv, 7, proprio=prop, use_cache=False)
    assert with_cache.shape == (3, 7)
    assert torch.equal(with_cache, without)


def test_first_step_sees_the_image():
    """The trap of openvla issue 346: a decoder that drops the image gives the same tokens for any image."""
    vla = tiny_vla(seed=5)
    with torch.no_grad():  # make the image dominate the prefix, so any decoder that drops it is caught
        vla.projector.fc3.weight.mul_(30)
    rng = np.random.default_rng(1)
    ids = vla.tokenize("lift the blue ball")
    outs = {tuple(greedy_action_tokens(vla, ids, vla.preprocess(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)), 7)[0].tolist())
            for _ in range(4)}
    assert len(outs) > 1


def test_batched_predict_action_matches_single(tiny_vla):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    batch = tiny_vla.predict_action(list(images), "push the cube to the left")
    assert batch.shape == (2, 7)
    for i in range(2):
        np.testing.assert_array_equal(batch[i], tiny_vla.predict_action(images[i], "push the cube to the left"))


def test_loss_only_on_labelled_positions(tiny_vla):
    ids = tiny_vla.tokenize("stack the red cube on the blue cube")
    pv = tiny_vla.preprocess(np.zeros((28, 28, 3), np.uint8))
    labels = torch.full_like(ids, -100)
    labels[0, -3:] = ids[0, -3:]
    out = tiny_vla(input_ids=ids, pixel_values=pv, labels=labels)
    logits = out.logits[0, -4:-1]
    expected = torch.nn.functional.cross_entropy(logits, ids[0, -3:])
    assert torch.allclose(out.loss, expected, atol=1e-6)

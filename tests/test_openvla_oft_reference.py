"""OpenVLA-OFT's extensions against the fixture written by the original OpenVLA-OFT code.

``tests/fixtures/openvla-oft-tiny-a``: two images (third-person, wrist), OFT's MLP proprio projector,
an 8 x 7 action chunk decoded in one bidirectional pass, the L1 regression head (see the fixture's
README in the reference fixtures). Tolerances are the README's: rtol/atol 1e-4 (atol 2e-4 for actions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robosteer.models.action_heads import with_action_slots
from robosteer.models.loading import load_vla
from robosteer.models.sequence import SequenceBuilder
from robosteer.models.tokenizer import build_tokenizer

from .conftest import fixture_path

OVERRIDES = {"n_views": 2, "action_chunk": 8}
K, A = 8, 7
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def folder() -> Path:
    return fixture_path("openvla-oft-tiny-a")


@pytest.fixture(scope="module")
def expected(folder):
    with np.load(folder / "expected.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def layout(folder):
    return json.loads((folder / "cases.json").read_text())["layout"]


@pytest.fixture(scope="module")
def vla(folder):
    torch.set_num_threads(1)
    return load_vla(folder, dtype=torch.float32, overrides=OVERRIDES)


@pytest.fixture(scope="module")
def inputs(vla, expected):
    pixel_values = vla.preprocess([list(expected["images_uint8"])])
    proprio = vla.normalize_proprio(expected["proprio_raw"])
    prompt = vla.with_prompt_suffix(torch.tensor(expected["prompt_input_ids"])[None])
    return pixel_values, proprio, prompt


def close(actual, wanted, **tol):
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual, wanted, **(tol or TOL))
    return float(np.abs(actual - wanted).max())


def test_the_oft_folder_sets_the_switches(vla):
    cfg = vla.config
    assert (cfg.n_views, cfg.action_chunk, cfg.action_head, cfg.action_head_blocks) == (2, 8, "l1-regression", 2)
    assert (cfg.proprio_dim, cfg.proprio_projector, cfg.normalization) == (8, "mlp", "bounds_q99")
    assert vla.n_prefix == 1 + 2 * 256 + 1 and vla.n_action_slots == 56


def test_loading_needs_the_chunk_size_and_refuses_pickles(folder, tmp_path):
    with pytest.raises(ValueError, match=r"overrides=\{'action_chunk': K\}"):
        load_vla(folder)
    with pytest.raises(ValueError, match="unknown config override"):
        load_vla(folder, overrides={"chunk": 8})
    # a folder with the heads only as .pt pickles loads only when pickles are allowed
    for name in ("config.json", "dataset_statistics.json", "model.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    from safetensors.torch import load_file

    for module in ("action_head", "proprio_projector"):
        torch.save(load_file(folder / f"{module}--5000_checkpoint.safetensors"), tmp_path / f"{module}--5000_checkpoint.pt")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_vla(tmp_path, overrides=OVERRIDES)
    loaded = load_vla(tmp_path, overrides=OVERRIDES, allow_pickle=True)
    assert loaded.config.action_head == "l1-regression"


def test_inputs_match(vla, expected, inputs):
    pixel_values, proprio, _ = inputs
    assert tuple(pixel_values.shape) == (1, 12, 224, 224)
    assert torch.equal(pixel_values[0], torch.from_numpy(expected["pixel_values"]))
    close(proprio[0], expected["proprio_normalized"].astype(np.float32))


def test_views_go_through_the_same_towers(vla, expected, inputs):
    pixel_values, _, _ = inputs
    with torch.no_grad():
        features = vla.vision_backbone(pixel_values)[0]  # (2 * 256, 24 + 32): image 0 patches, then image 1
        close(vla.projector(features[None])[0], expected["projector_out"])
    close(features[:, :24].reshape(2, 256, 24), expected["dino_patches"])
    close(features[:, 24:].reshape(2, 256, 32), expected["siglip_patches"])


def test_embeddings_hidden_states_and_heads_match(vla, expected, inputs, layout):
    pixel_values, proprio, prompt = inputs
    ids = with_action_slots(prompt, 56)
    assert ids.shape[1] + vla.n_prefix - 1 == 590
    with torch.no_grad():
        embeds, _ = vla.embed(ids, pixel_values, None, proprio)
        out, cache = vla.run_with_cache(input_ids=ids, pixel_values=pixel_values, proprio=proprio,
                                        output_hidden_states=True, names_filter="llm.*.hook_z")
    close(embeds[0], expected["inputs_embeds"])
    start, end = layout["action_slots"]
    assert (start, end) == (533, 589) and bool((embeds[0, start:end] == 0).all())
    assert bool((embeds[0, end] != 0).any()) and bool((embeds[0, layout["proprio_token"][0]] != 0).any())
    assert len(out.hidden_states) == 3
    with torch.no_grad():
        _, vision = vla.run_with_cache(input_ids=ids, pixel_values=pixel_values, proprio=proprio,
                                       names_filter="dino.blocks.0.attn.hook_z")
    assert vision["dino.blocks.0.attn.hook_z"].shape[0] == 2  # one tower call over both views (observation-major)
    for i, hidden in enumerate(out.hidden_states):
        close(hidden[0], expected["hidden_states_all"][i])
    for layer in range(2):
        z = cache[f"llm.blocks.{layer}.attn.hook_z"]
        assert tuple(z.shape) == (1, 590, 2, 8)  # every head at every position, the action slots included
        close(z[0], expected["attn_heads_all"][layer])


def test_the_chunk_matches(vla, expected, inputs, layout):
    pixel_values, proprio, prompt = inputs
    pred = vla.predict_chunk(prompt, pixel_values, proprio)
    a, b = layout["hidden_slice_used_by_code"]
    assert (a, b) == (532, 588)  # OFT's off-by-one: the last prompt token .. one before the last slot
    close(pred.hidden[0], expected["final_hidden_action"])
    close(pred.normalized[0], expected["normalized_actions"])
    close(pred.actions[0], expected["actions"], rtol=1e-4, atol=2e-4)
    action = vla.predict_action(input_ids=expected["prompt_input_ids"], pixel_values=pixel_values,
                                proprio=expected["proprio_raw"])
    assert action.shape == (K, A) and action.dtype == np.float64
    close(action, expected["actions"], rtol=1e-4, atol=2e-4)
    two = vla.predict_action(input_ids=expected["prompt_input_ids"], pixel_values=pixel_values.repeat(2, 1, 1, 1),
                             proprio=np.stack([expected["proprio_raw"]] * 2))
    assert two.shape == (2, K, A)
    close(two[1], expected["actions"], rtol=1e-4, atol=2e-4)


def test_the_bidirectional_mask_matters(vla, expected):
    embeds = torch.from_numpy(expected["inputs_embeds"])[None]
    with torch.no_grad():
        causal = vla.language_model(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1][0, 532:588]
    assert float((causal - torch.from_numpy(expected["final_hidden_action"])).abs().max()) > 1e-2
    close(causal, expected["eager_causal_final_hidden_action"])  # the README's causal (eager) run


def test_recording_patterns_keeps_the_bidirectional_mask(vla, expected, inputs):
    pixel_values, proprio, prompt = inputs
    ids = with_action_slots(prompt, 56)
    with torch.no_grad():
        out, cache = vla.run_with_cache(input_ids=ids, pixel_values=pixel_values, proprio=proprio,
                                        output_hidden_states=True, names_filter="llm.blocks.0.attn.hook_pattern")
    pattern = cache["llm.blocks.0.attn.hook_pattern"]
    assert tuple(pattern.shape) == (1, 2, 590, 590) and bool((pattern[0, :, 0, 1:] > 0).all())  # BOS sees the future
    close(out.hidden_states[-1][0, 532:588], expected["final_hidden_action"])


def test_padded_rows_predict_as_alone(vla, expected, inputs):
    pixel_values, proprio, prompt = inputs
    short = torch.cat([prompt[:, :5], prompt[:, -3:]], dim=1)
    rows = [with_action_slots(p, 56)[0] for p in (prompt, short)]
    width = max(len(r) for r in rows)
    ids = torch.full((2, width), vla.config.pad_token_id, dtype=torch.long)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    with torch.no_grad():
        out = vla(input_ids=ids, pixel_values=pixel_values.repeat(2, 1, 1, 1), attention_mask=mask,
                  proprio=proprio.repeat(2, 1), output_hidden_states=True)
    alone = vla.predict_chunk(short, pixel_values, proprio).hidden[0]
    start = vla.n_prefix - 1 + short.shape[1] - 1
    close(out.hidden_states[-1][1, start:start + 56], alone.numpy(), rtol=1e-5, atol=1e-5)
    close(out.hidden_states[-1][0, 532:588], expected["final_hidden_action"])


def test_save_and_load_round_trip(vla, inputs, tmp_path):
    pixel_values, proprio, prompt = inputs
    vla.save_pretrained(tmp_path / "oft")
    names = sorted(p.name for p in (tmp_path / "oft").iterdir())
    assert "action_head--latest_checkpoint.safetensors" in names
    assert "proprio_projector--latest_checkpoint.safetensors" in names
    from safetensors import safe_open

    with safe_open(str(tmp_path / "oft" / "model.safetensors"), framework="pt") as f:
        assert not any(k.startswith(("action_head.", "proprio_projector.")) for k in f.keys())
    with safe_open(str(tmp_path / "oft" / "action_head--latest_checkpoint.safetensors"), framework="pt") as f:
        assert all(k.startswith("module.model.") for k in f.keys())
    again = load_vla(tmp_path / "oft")  # no overrides: robosteer wrote the switches into config.json
    assert again.config == vla.config.replace(hf_extra=again.config.hf_extra)  # saving adds OpenVLA's auto_map
    state, reloaded = vla.state_dict(), again.state_dict()
    assert list(state) == list(reloaded) and all(torch.equal(state[k], reloaded[k]) for k in state)
    first, second = vla.predict_chunk(prompt, pixel_values, proprio), again.predict_chunk(prompt, pixel_values, proprio)
    assert np.array_equal(first.actions, second.actions)


def test_the_sequence_builder_gives_the_action_slots(vla, expected):
    vla.tokenizer = build_tokenizer()
    try:
        rng = np.random.default_rng(0)
        images = expected["images_uint8"]
        frames = [{"image": images[0], "views": {"agentview": images[0], "wrist": images[1]},
                   "instruction": text, "action": rng.uniform(-0.5, 0.5, (K, A)), "proprio": expected["proprio_raw"]}
                  for text in ("pick up the black bowl", "put the bowl on the plate next to the cube")]
        builder = SequenceBuilder(vla)
        assert (builder.n_views, builder.chunk, builder.eos) == (2, 8, True)
        with pytest.raises(ValueError, match="this model takes 2 images per observation"):
            SequenceBuilder(vla, n_views=1)
        with pytest.raises(ValueError, match="chunks of 8 actions"):
            SequenceBuilder(vla, chunk=1)
        batch = builder.build(frames)
        assert tuple(batch.pixel_values.shape) == (2, 12, 224, 224) and batch.n_prefix == 514
        assert tuple(batch.action_positions.shape) == (2, 56) and tuple(batch.actions.shape) == (2, K, A)
        with torch.no_grad():
            embeds, _ = vla.embed(batch.input_ids, batch.pixel_values, batch.attention_mask, batch.proprio)
            out = vla(**batch.model_inputs(), output_hidden_states=True)
        for row in range(2):
            positions = batch.action_positions[row]
            assert bool((embeds[row, positions] == 0).all())  # the action positions are the zero-embedding slots
            assert not bool((embeds[row, batch.last_prompt[row]] == 0).all())
            stop = int(positions[-1]) + 1
            assert int(batch.input_ids[row, stop - batch.n_prefix + 1]) == 2  # the stop token follows the slots
            prompt = batch.input_ids[row:row + 1, :int(batch.prompt_lengths[row])]
            alone = vla.predict_chunk(prompt, batch.pixel_values[row:row + 1], batch.proprio[row:row + 1]).hidden[0]
            read = out.hidden_states[-1][row, batch.predicting(positions)]  # what the head reads
            close(read, alone.numpy(), rtol=1e-5, atol=1e-5)
        assert builder.length(frames[0]) == int(batch.attention_mask[0].sum())
    finally:
        vla.tokenizer = None


def test_the_switches_are_validated_and_off_by_default():
    from robosteer.models.tiny import tiny_config

    cfg, _ = tiny_config()
    assert (cfg.n_views, cfg.action_chunk, cfg.action_head, cfg.proprio_projector, cfg.normalization) == \
        (1, 1, "tokens", "linear", "openvla")
    assert not cfg.parallel_decoding
    written = set(cfg.to_hf_dict().get("robosteer", {}))  # config.json of a default model: no OFT keys
    assert not written & {"n_views", "proprio_projector", "action_chunk", "action_head", "action_head_blocks",
                          "normalization"}
    with pytest.raises(ValueError, match="action_chunk=4 needs action_head='l1-regression'"):
        cfg.replace(action_chunk=4)
    with pytest.raises(ValueError, match=r"VLAConfig.action_head must be one of"):
        cfg.replace(action_head="diffusion")
    with pytest.raises(ValueError, match=r"VLAConfig.n_views must be an integer >= 1"):
        cfg.replace(n_views=0)
    with pytest.raises(ValueError, match=r"VLAConfig.proprio_projector must be one of"):
        cfg.replace(proprio_projector="film")
    oft = cfg.replace(n_views=2, action_chunk=3, action_head="l1-regression", normalization="bounds")
    assert type(oft).from_hf_dict(oft.to_hf_dict()) == oft

"""OpenVLA-OFT+'s FiLM switch (``use_film``): the vision towers read the instruction, and nothing else changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robosteer.app.pretrain import PretrainConfig
from robosteer.files import FileFormatError
from robosteer.models.action_heads import l1_action_loss
from robosteer.models.config import VLAConfig
from robosteer.models.loading import build_vla_from_config, load_vla
from robosteer.models.sequence import SequenceBuilder
from robosteer.train import TrainConfig, train
from robosteer.train.strategies import make_strategy

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)


def l1_config(film: bool, n_views: int = 1):
    vla = tiny_train_vla(0)
    cfg = vla.config.replace(action_head="l1-regression", normalization="bounds_q99", n_views=n_views, use_film=film)
    return cfg, vla.tokenizer


def build(film: bool, seed: int = 0, n_views: int = 1):
    cfg, tok = l1_config(film, n_views)
    return build_vla_from_config(cfg, tokenizer=tok, seed=seed).eval()


def film_parameters(vla) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vla.named_parameters() if ".scale." in k or ".shift." in k}


def frames_for(vla, n=4, seed=0):
    frames = make_frames(n, seed=seed)
    if vla.config.n_views > 1:
        for f in frames:
            f["views"] = {"agentview": f["image"], "wrist": np.ascontiguousarray(np.flipud(f["image"]))}
    return frames


def batch_of(vla, frames):
    return SequenceBuilder(vla, eos=True).build(frames)


def outputs(vla, b):
    with torch.no_grad():
        return vla(input_ids=b.input_ids, pixel_values=b.pixel_values, attention_mask=b.attention_mask,
                   proprio=b.proprio).logits


def test_film_adds_scale_and_shift_to_every_tower_block_only():
    plain, film = build(False), build(True)
    extra = set(dict(film.named_parameters())) - set(dict(plain.named_parameters()))
    assert extra == set(film_parameters(film))
    towers = film.vision_backbone.towers()
    assert len(extra) == 4 * sum(len(t.blocks) for t in towers)  # scale/shift weight+bias per block
    for tower in towers:
        assert tower.blocks[0].scale.in_features == film.config.llm_dim
        assert tower.blocks[0].scale.out_features == tower.cfg.width
    assert not set(dict(plain.named_parameters())) - set(dict(film.named_parameters()))


@pytest.mark.parametrize("n_views", [1, 2])
def test_zero_film_is_the_plain_model(n_views):
    """With gamma = beta = 0 the FiLM model computes exactly the plain one (same other weights)."""
    plain, film = build(False, n_views=n_views), build(True, seed=1, n_views=n_views)
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and set(missing) == set(film_parameters(film))
    b = batch_of(plain, frames_for(plain))
    before = outputs(film, b)
    assert not torch.allclose(before, outputs(plain, b))  # random FiLM weights do change the output ...
    with torch.no_grad():
        for p in film_parameters(film).values():
            p.zero_()
    torch.testing.assert_close(outputs(film, b), outputs(plain, b), rtol=0, atol=0)  # ... and zero ones do not


def patch_features(vla, instruction, image):
    b = batch_of(vla, [{"image": image, "instruction": instruction, "action": np.zeros(7), "proprio": np.zeros(7)}])
    with torch.no_grad():
        text = vla.language_model.get_input_embeddings()(b.input_ids)
        from robosteer.models.action_heads import action_slot_mask
        from robosteer.models.vla import instruction_embedding

        slots = action_slot_mask(b.input_ids, b.attention_mask, vla.n_action_slots)
        language = instruction_embedding(text, b.attention_mask, slots) if vla.config.use_film else None
        return vla.vision_backbone(b.pixel_values, language)


def test_only_a_film_model_sees_the_instruction_in_its_patches():
    image = make_frames(1)[0]["image"]
    for film in (False, True):
        vla = build(film)
        red, green = patch_features(vla, "pick up the red cube", image), patch_features(vla, "pick up the green cube", image)
        assert torch.equal(red, green) is (not film)


def test_film_conditioning_ignores_padding_and_action_slots():
    """Each row's output in a right-padded batch of different prompt lengths equals the row alone."""
    vla = build(True)
    frames = frames_for(vla, 2)
    assert frames[0]["instruction"] != frames[1]["instruction"]
    together = batch_of(vla, frames)
    assert (together.attention_mask == 0).any()  # the shorter row is padded
    both = outputs(vla, together)
    for i, frame in enumerate(frames):
        alone = batch_of(vla, [frame])
        n = int(alone.attention_mask.sum()) + vla.n_prefix - 1
        torch.testing.assert_close(both[i, :n], outputs(vla, alone)[0, :n], rtol=1e-5, atol=1e-5)


def test_film_round_trips_through_config_json_and_save(tmp_path):
    vla = build(True)
    d = vla.config.to_hf_dict()
    assert d["robosteer"]["use_film"] is True
    assert "use_film" not in build(False).config.to_hf_dict()["robosteer"]  # off: absent, as for real checkpoints
    assert VLAConfig.from_hf_dict(d) == vla.config
    vla.save_pretrained(tmp_path / "p")
    again = load_vla(tmp_path / "p")
    b = batch_of(vla, frames_for(vla))
    torch.testing.assert_close(outputs(again, b), outputs(vla, b), rtol=0, atol=0)


def test_bad_film_settings_are_refused(tmp_path):
    cfg, _ = l1_config(True)
    with pytest.raises(ValueError, match="use_film needs action_head='l1-regression'"):
        cfg.replace(action_head="tokens", normalization="openvla")
    with pytest.raises(ValueError, match="use_film must be true or false"):
        cfg.replace(use_film=1)
    d = cfg.to_hf_dict()
    d["robosteer"]["use_film"] = "yes"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    with pytest.raises((FileFormatError, ValueError), match="use_film"):
        VLAConfig.from_hf_dict(json.loads(path.read_text()), source=path)
    with pytest.raises(ValueError, match="film needs action_head='l1-regression'"):
        PretrainConfig(out_dir=str(tmp_path), film=True, action_head="tokens", label_smoothing=1.0)
    assert PretrainConfig(out_dir=str(tmp_path), film=True, action_head="l1-regression",
                          label_smoothing=0).model_changes()["use_film"] is True


def test_full_training_moves_the_film_weights_and_lowers_the_loss(tmp_path):
    vla = build(True)
    frames = frames_for(vla, 6)
    before = {k: v.clone() for k, v in film_parameters(vla).items()}
    with torch.no_grad():
        loss0 = float(l1_action_loss(vla, batch_of(vla, frames)))
    train(vla, frames, make_strategy("full"), TrainConfig(out_dir=str(tmp_path), steps=30, batch_size=6, lr=3e-3,
                                                          warmup_steps=1, ckpt_every=100, progress=False,
                                                          augment=False))
    assert all(not torch.equal(before[k], v) for k, v in film_parameters(vla).items()
               if ".blocks.2." not in k)  # the last block is past OpenVLA's feature layer: it never runs
    with torch.no_grad():
        assert float(l1_action_loss(vla, batch_of(vla, frames))) < loss0

"""Training examples: the loss mask, padding, augmentation and the loss itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robosteer.models.vla import IGNORE_INDEX
from robosteer.train.augment import AugmentConfig, augment_image, hsv_to_rgb, random_shift, rgb_to_hsv
from robosteer.train.batches import BatchBuilder
from robosteer.train.loss import action_loss
from robosteer.train.sampler import DataOrder

from .train_helpers import make_frames, single_thread, tiny_train_vla  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def vla():
    return tiny_train_vla()


def test_loss_mask_covers_exactly_actions_and_eos(vla):
    frames = make_frames(4)
    batch = BatchBuilder(vla).collate(frames)
    action_dim = len(frames[0]["action"])
    for row, frame in enumerate(frames):
        prompt = vla.tokenize(frame["instruction"])[0]
        ids, labels, mask = batch.input_ids[row], batch.labels[row], batch.attention_mask[row]
        n = int(mask.sum())
        assert torch.equal(ids[:len(prompt)], prompt)
        assert (labels[:len(prompt)] == IGNORE_INDEX).all()
        target = labels[len(prompt):n]
        assert len(target) == action_dim + 1
        assert vla.action_tokenizer.is_action(target[:-1]).all()
        assert int(target[-1]) == vla.tokenizer.eos_token_id
        assert torch.equal(target, ids[len(prompt):n])
        assert (labels[n:] == IGNORE_INDEX).all() and (ids[n:] == vla.config.pad_token_id).all()
        decoded = vla.action_tokenizer.decode(target[:-1])
        assert np.abs(decoded[:-1] - frame["action"][:-1]).max() <= 1.0 / 127  # within one bin
    assert batch.n_loss_tokens == len(frames) * (action_dim + 1)
    assert batch.input_ids.shape[1] > len(vla.tokenize(frames[0]["instruction"])[0]) + action_dim + 1  # padded row


def test_loss_matches_model_loss_and_smoothing_changes_it(vla):
    batch = BatchBuilder(vla).collate(make_frames(3))
    with torch.no_grad():
        out = vla(**batch.model_inputs(), labels=batch.labels)
        plain = action_loss(out.logits, batch.labels, vla.n_prefix, vla.action_tokenizer)
        smooth = action_loss(out.logits, batch.labels, vla.n_prefix, vla.action_tokenizer, sigma=2.0)
        sharp = action_loss(out.logits, batch.labels, vla.n_prefix, vla.action_tokenizer, sigma=1e-3)
    torch.testing.assert_close(plain, out.loss, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(smooth, plain)
    torch.testing.assert_close(sharp, plain, rtol=1e-5, atol=1e-5)


def test_augmentation_is_seeded_and_changes_pixels():
    image = make_frames(1, image_size=32)[0]["image"]
    a = augment_image(image, np.random.default_rng(7))
    b = augment_image(image, np.random.default_rng(7))
    c = augment_image(image, np.random.default_rng(8))
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a.astype(int) - image.astype(int)).mean() > 1.0


def test_augmentation_identity_settings_and_hsv_roundtrip():
    image = make_frames(1, image_size=16)[0]["image"]
    same = augment_image(image, np.random.default_rng(0), AugmentConfig(crop_scale=1.0, brightness=0.0,
                         contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0))
    assert np.abs(same.astype(int) - image.astype(int)).max() <= 1
    x = np.random.default_rng(0).uniform(0, 1, (50, 3)).astype(np.float64)
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-12)


def test_random_shift_translates_whole_pixels_and_repeats_the_border():
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    offsets = set()
    for seed in range(40):
        out = random_shift(image, np.random.default_rng(seed), 2)
        assert out.shape == image.shape and out.dtype == np.uint8
        # the unshifted image sits in the padded one at (2, 2); recover the offset from the interior
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="edge")
        found = [(t, l) for t in range(5) for l in range(5) if np.array_equal(padded[t:t + 12, l:l + 12], out)]
        assert found, "the output is not a whole-pixel translation of the input"
        offsets.add(found[0])
    assert len(offsets) > 10  # up to 2 px each way: 25 offsets possible, most of them drawn
    assert all(0 <= t <= 4 and 0 <= l <= 4 for t, l in offsets)
    cfg = dict(crop_scale=1.0, brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)
    moved = augment_image(image, np.random.default_rng(3), AugmentConfig(shift=3, **cfg))
    assert not np.array_equal(moved, augment_image(image, np.random.default_rng(3), AugmentConfig(**cfg)))
    with pytest.raises(ValueError, match="shift"):
        AugmentConfig(shift=-1)
    with pytest.raises(ValueError, match="shift"):
        AugmentConfig(shift=1.5)


def test_batch_augmentation_needs_seeds_and_is_reproducible(vla):
    frames = make_frames(2)
    builder = BatchBuilder(vla, augment=AugmentConfig())
    with pytest.raises(ValueError, match="seed"):
        builder.collate(frames)
    one = builder.collate(frames, seeds=[(0, 1, 0), (0, 1, 1)]).pixel_values
    two = builder.collate(frames, seeds=[(0, 1, 0), (0, 1, 1)]).pixel_values
    plain = BatchBuilder(vla).collate(frames).pixel_values
    assert torch.equal(one, two) and not torch.equal(one, plain)


@pytest.mark.parametrize("bad, message", [
    ({"action": np.zeros(3)}, "action must have shape"),
    ({"image": np.zeros((16, 16, 3), dtype=np.float32)}, "uint8"),
    ({"instruction": ""}, "instruction"),
    ({"proprio": None}, "proprio"),
])
def test_bad_frames_are_refused(vla, bad, message):
    frame = {**make_frames(1)[0], **bad}
    if frame.get("proprio") is None:
        del frame["proprio"]
    with pytest.raises(ValueError, match=message):
        BatchBuilder(vla).collate([frame])


def test_data_order_visits_every_frame_each_epoch():
    order = DataOrder(n_frames=10, seed=3)
    first = order.batch(0, 5) + order.batch(1, 5)
    assert sorted(first) == list(range(10))
    assert order.batch(4, 5) == order.batch(4, 5)
    assert first != order.batch(2, 5) + order.batch(3, 5)  # a new permutation next epoch


def test_train_config_takes_its_augmentation_ranges_from_augment_config():
    """One definition: TrainConfig's augmentation defaults and checks are AugmentConfig's, named as its fields."""
    from robosteer.train.config import TrainConfig, augment_config

    cfg = TrainConfig(out_dir="x")
    assert augment_config(cfg) == AugmentConfig() and cfg.augmentation() == AugmentConfig()
    assert augment_config(cfg.replace(augment=False)) is None
    assert TrainConfig(out_dir="x", augment_shift=2, augment_crop_scale=1.0, augment_hue=0.0).augmentation() == \
        AugmentConfig(shift=2, crop_scale=1.0, hue=0.0)
    for field, value, message in (("augment_shift", -1, r"TrainConfig\.augment_shift must be an int >= 0"),
                                  ("augment_crop_scale", 0.0, r"TrainConfig\.augment_crop_scale must be in \(0, 1\]"),
                                  ("augment_hue", 0.6, r"TrainConfig\.augment_hue must be in \[0, 0\.5\]")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(out_dir="x", **{field: value})

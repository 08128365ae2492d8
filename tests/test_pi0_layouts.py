"""pi0 beyond the fixture's layout: several cameras (one resized, one empty), 4 heads sharing 2 KV heads.

The reference here is written independently of ``robosteer.models.pi0``: float64, from the state dict,
with lerobot's *joint* training forward (prefix and suffix in one attention under the 2-D mask of
``make_att_2d_masks``) rather than the cached prefix path the port uses, and with the pixels of the
resized camera built by hand (a 20 x 28 image at 28 px needs no interpolation: it is padded 4 rows
above and below with black, i.e. -1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import robosteer
from robosteer.models.pi0 import tiny_pi0

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


@pytest.fixture(scope="module")
def case():
    pi0 = tiny_pi0(seed=3, cameras=CAMERAS, heads=4, kv_heads=2, tokenizer_max_length=12)
    rng = np.random.default_rng(0)
    images = {"base_0_rgb": rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8),
              "left_wrist_0_rgb": rng.integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)}  # right wrist: empty
    state = rng.normal(size=(2, 7)).astype(np.float32)
    x_t = rng.normal(size=(2, 4, 8)).astype(np.float32)
    time = np.array([0.7, 0.2], np.float32)
    return pi0, images, state, x_t, time


def _rms(x, w):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * (1 + w)


def _ln(x, w, b):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-6) * w + b


def _gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def reference_velocity(pi0, pixels, img_valid, ids, lang_valid, state, x_t, t):
    """float64 joint forward of lerobot's ``PI0Pytorch.forward`` at (x_t, t)."""
    W = {k: v.double() for k, v in pi0.state_dict().items()}
    cfg = pi0.config
    pre = "model.paligemma_with_expert."
    sig = pre + "paligemma.model.vision_tower.vision_model."
    vis = cfg.vision

    def siglip(px):
        x = torch.nn.functional.conv2d(px, W[sig + "embeddings.patch_embedding.weight"],
                                       W[sig + "embeddings.patch_embedding.bias"], stride=vis.patch)
        x = x.flatten(2).transpose(1, 2) + W[sig + "embeddings.position_embedding.weight"]
        for i in range(vis.depth):
            p = f"{sig}encoder.layers.{i}."
            h = _ln(x, W[p + "layer_norm1.weight"], W[p + "layer_norm1.bias"])
            q, k, v = (torch.nn.functional.linear(h, W[p + f"self_attn.{n}_proj.weight"], W[p + f"self_attn.{n}_proj.bias"])
                       .view(*h.shape[:2], vis.n_heads, -1).transpose(1, 2) for n in "qkv")
            a = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(vis.head_dim), -1) @ v
            x = x + torch.nn.functional.linear(a.transpose(1, 2).reshape(h.shape), W[p + "self_attn.out_proj.weight"],
                                               W[p + "self_attn.out_proj.bias"])
            h = _ln(x, W[p + "layer_norm2.weight"], W[p + "layer_norm2.bias"])
            x = x + torch.nn.functional.linear(_gelu(torch.nn.functional.linear(h, W[p + "mlp.fc1.weight"], W[p + "mlp.fc1.bias"])),
                                               W[p + "mlp.fc2.weight"], W[p + "mlp.fc2.bias"])
        x = _ln(x, W[sig + "post_layernorm.weight"], W[sig + "post_layernorm.bias"])
        return torch.nn.functional.linear(x, W[pre + "paligemma.model.multi_modal_projector.linear.weight"],
                                          W[pre + "paligemma.model.multi_modal_projector.linear.bias"])

    B = ids.shape[0]
    prefix = [siglip(px) for px in pixels]
    valid = [m[:, None].expand(-1, p.shape[1]) for m, p in zip(img_valid, prefix)]
    lm = pre + "paligemma.model.language_model."
    prefix.append(W[lm + "embed_tokens.weight"][ids] * math.sqrt(cfg.vlm.width))
    valid.append(lang_valid)
    prefix, valid = torch.cat(prefix, 1), torch.cat(valid, 1)
    half = cfg.expert.width // 2
    period = cfg.min_period * (cfg.max_period / cfg.min_period) ** torch.linspace(0, 1, half, dtype=torch.float64)
    ang = t[:, None] * 2 * math.pi / period
    temb = torch.cat([ang.sin(), ang.cos()], -1)

    def lin(name, x):
        return torch.nn.functional.linear(x, W[f"model.{name}.weight"], W[f"model.{name}.bias"])

    act = lin("action_in_proj", x_t)
    fused = lin("action_time_mlp_out", torch.nn.functional.silu(lin("action_time_mlp_in",
                                                                    torch.cat([act, temb[:, None].expand_as(act)], -1))))
    suffix = torch.cat([lin("state_proj", state)[:, None], fused], 1)
    S = suffix.shape[1]
    pad = torch.cat([valid, torch.ones(B, S, dtype=torch.bool)], 1)
    att = torch.cat([torch.zeros(B, prefix.shape[1], dtype=torch.long),
                     torch.tensor([1, 1] + [0] * (S - 2)).expand(B, -1)], 1)
    cum = att.cumsum(1)
    allowed = (cum[:, None, :] <= cum[:, :, None]) & pad[:, None, :] & pad[:, :, None]
    pos = pad.long().cumsum(1) - 1
    hd, H, G = cfg.vlm.head_dim, cfg.vlm.n_heads, cfg.vlm.n_kv_heads
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    f = pos[..., None].double() * inv
    cos, sin = torch.cat([f, f], -1).cos()[:, None], torch.cat([f, f], -1).sin()[:, None]

    def rope(x):
        return x * cos + torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1) * sin

    streams = [prefix, suffix]
    names = [lm, pre + "gemma_expert.model."]
    for layer in range(cfg.vlm.depth):
        qs, ks, vs, normed = [], [], [], []
        for x, name in zip(streams, names):
            p = f"{name}layers.{layer}."
            h = _rms(x, W[p + "input_layernorm.weight"])
            qs.append(torch.nn.functional.linear(h, W[p + "self_attn.q_proj.weight"]).view(B, -1, H, hd))
            ks.append(torch.nn.functional.linear(h, W[p + "self_attn.k_proj.weight"]).view(B, -1, G, hd))
            vs.append(torch.nn.functional.linear(h, W[p + "self_attn.v_proj.weight"]).view(B, -1, G, hd))
        q, k, v = (torch.cat(z, 1).transpose(1, 2) for z in (qs, ks, vs))
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(H // G, 1), v.repeat_interleave(H // G, 1)
        scores = (q @ k.transpose(2, 3)) / math.sqrt(hd) + torch.where(allowed[:, None], 0.0, -2.3819763e38)
        z = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, -1, H * hd)
        out, start = [], 0
        for x, name in zip(streams, names):
            p = f"{name}layers.{layer}."
            zi = z[:, start:start + x.shape[1]]
            start += x.shape[1]
            x = x + torch.nn.functional.linear(zi, W[p + "self_attn.o_proj.weight"])
            h = _rms(x, W[p + "post_attention_layernorm.weight"])
            m = _gelu(torch.nn.functional.linear(h, W[p + "mlp.gate_proj.weight"])) * torch.nn.functional.linear(
                h, W[p + "mlp.up_proj.weight"])
            out.append(x + torch.nn.functional.linear(m, W[p + "mlp.down_proj.weight"]))
        streams = out
    final = _rms(streams[1], W[names[1] + "norm.weight"])[:, -cfg.chunk_size:]
    return lin("action_out_proj", final), pos


def test_several_cameras_resized_and_empty_match_the_joint_reference(case):
    pi0, images, state, x_t, time = case
    got = pi0(images=images, state=state, instruction=["pick up the red cube", "stack the cubes"], x_t=x_t, time=time)
    inputs = pi0.prepare_inputs(images, state, instruction=["pick up the red cube", "stack the cubes"])
    base = torch.from_numpy(images["base_0_rgb"]).double().permute(0, 3, 1, 2) / 255 * 2 - 1
    wrist = torch.full((2, 3, 28, 28), -1.0, dtype=torch.float64)
    wrist[:, :, 4:24] = torch.from_numpy(images["left_wrist_0_rgb"]).double().permute(0, 3, 1, 2) / 255 * 2 - 1
    empty = torch.full((2, 3, 28, 28), -1.0, dtype=torch.float64)
    masks = [torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)]
    for mine, theirs in zip(inputs.pixels, (base, wrist, empty)):
        assert (mine.double() - theirs).abs().max() < 1e-6
    want, pos = reference_velocity(pi0, [base, wrist, empty], masks, inputs.input_ids, inputs.attention_mask,
                                   inputs.state.double(), torch.from_numpy(x_t).double(), torch.from_numpy(time).double())
    assert (got.velocity.double() - want).abs().max() < 1e-4
    prefix = pi0.run_prefix(inputs)
    assert torch.equal(prefix.positions, pos[:, : prefix.positions.shape[1]])
    n_img = pi0.config.vision.n_patches
    assert not prefix.pad_mask[:, 2 * n_img:3 * n_img].any()  # the empty camera is masked out
    assert (prefix.positions[:, 2 * n_img:3 * n_img] == 2 * n_img - 1).all()  # and repeats the last position


def test_the_layout_round_trips_through_a_lerobot_folder(case, tmp_path):
    pi0, images, state, x_t, time = case
    loaded = robosteer.load_vla(pi0.save_pretrained(tmp_path / "pi0"))
    assert loaded.config == pi0.config and loaded.head_layout.to_dict() == {"llm": [2, 4], "expert": [2, 4], "siglip": [2, 2]}
    kw = dict(images=images, state=state, instruction="pick up the red cube", seed=2)
    assert torch.equal(loaded.predict_action_chunk(**kw), pi0.predict_action_chunk(**kw))


def test_resize_keeps_the_aspect_ratio_and_pads_the_centre():
    from robosteer.models.pi0.processor import prepare_image

    img = np.full((1, 10, 40, 3), 255, np.uint8)
    px = prepare_image(img, 20)  # 10 x 40 -> 5 x 20, then 7 rows above and 8 below
    assert px.shape == (1, 3, 20, 20)
    rows = (px[0, 0] > 0).any(dim=1)
    assert rows.nonzero().flatten().tolist() == list(range(7, 12))
    assert (px[0, :, :7] == -1).all() and (px[0, :, 12:] == -1).all()

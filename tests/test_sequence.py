"""The sequence builder: where every token sits, which logit predicts it, and the one frame type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robosteer.circuits.probes import action_logprob, build_inputs
from robosteer.data.frames import Frame, check_frame
from robosteer.models.sequence import SequenceBuilder, predicting_text, text_position
from robosteer.models.tiny import tiny_vla
from robosteer.models.vla import IGNORE_INDEX
from robosteer.train.batches import BatchBuilder
from robosteer.train.loss import action_loss

INSTRUCTIONS = ["pick up the red cube", "push the blue block to the left of the plate"]  # different lengths


def make_frames(n: int, proprio_dim: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        frame = {"image": rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), "instruction": INSTRUCTIONS[i % 2],
                 "action": rng.uniform(-0.9, 0.9, 7), "episode": i // 2, "step": i % 2, "keyframe": i % 2 == 0}
        if proprio_dim:
            frame["proprio"] = rng.uniform(-1, 1, proprio_dim)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module", params=[0, 7], ids=["no-proprio", "proprio"])
def setup(request):
    torch.set_num_threads(1)
    vla = tiny_vla(seed=5, proprio_dim=request.param)
    return vla, make_frames(3, request.param)


@pytest.mark.parametrize("eos", [False, True])
def test_action_positions_are_where_the_action_ids_sit(setup, eos):
    vla, frames = setup
    batch = SequenceBuilder(vla, eos=eos).build(frames)
    assert batch.action_positions.shape == (3, 7) and batch.n_actions == 7
    embeds, _ = vla.embed(batch.input_ids, batch.pixel_values, batch.attention_mask, batch.proprio)
    table = vla.language_model.get_input_embeddings().weight
    for b in range(3):
        n_prompt = int(batch.prompt_lengths[b])
        assert torch.equal(batch.input_ids[b, :n_prompt], vla.tokenize(frames[b]["instruction"])[0])
        assert torch.equal(batch.action_ids[b], batch.input_ids[b, n_prompt:n_prompt + 7])
        assert vla.action_tokenizer.is_action(batch.action_ids[b]).all()
        # the multimodal sequence holds each action id's embedding exactly at its position
        for k in range(7):
            assert torch.equal(embeds[b, batch.action_positions[b, k]], table[batch.action_ids[b, k]])
        assert torch.equal(embeds[b, batch.last_prompt[b]], table[batch.input_ids[b, n_prompt - 1]])
        assert int(batch.first_action[b]) == text_position(n_prompt, vla.n_prefix) == batch.action_positions[b, 0]
        n_text = int(batch.attention_mask[b].sum())
        assert n_text == n_prompt + 7 + int(eos)
        assert (batch.input_ids[b, n_text:] == vla.config.pad_token_id).all()
        if eos:
            assert int(batch.input_ids[b, n_text - 1]) == vla.tokenizer.eos_token_id
    assert batch.n_sequence_tokens == int(batch.attention_mask.sum()) + 3 * (vla.n_prefix - 1)


def test_labels_line_up_with_the_logits_that_predict_them(setup):
    vla, frames = setup
    batch = SequenceBuilder(vla, eos=True).build(frames)
    with torch.no_grad():
        logits = vla(**batch.model_inputs()).logits  # (B, S, V)
    aligned = predicting_text(logits, vla.n_prefix)  # (B, L - 1, V)
    assert aligned.shape[1] == batch.input_ids.shape[1] - 1
    for b in range(3):
        for j in range(1, batch.input_ids.shape[1]):
            assert torch.equal(aligned[b, j - 1], logits[b, batch.predicting(batch.text_position(j))])
        predictors = batch.predicting(batch.action_positions[b])
        assert torch.equal(predictors[0], batch.last_prompt[b])
        labelled = (batch.labels[b] != IGNORE_INDEX).nonzero()[:, 0]  # text indices carrying a loss
        assert torch.equal(batch.text_position(labelled[:7]), batch.action_positions[b])
        assert torch.equal(batch.labels[b, labelled[:7]], batch.action_ids[b])
    # the loss is the cross-entropy of the action ids (and EOS) at exactly those predictors
    rows = torch.arange(3)[:, None]
    eos_at = batch.predicting(batch.action_positions[:, -1] + 1)
    manual = F.cross_entropy(logits[rows, batch.predicting(batch.action_positions)].reshape(-1, logits.shape[-1]),
                             batch.action_ids.reshape(-1), reduction="sum")
    manual = manual + F.cross_entropy(logits[torch.arange(3), eos_at], torch.full((3,), vla.tokenizer.eos_token_id),
                                      reduction="sum")
    loss = action_loss(logits, batch.labels, vla.n_prefix, vla.action_tokenizer, reduction="sum")
    torch.testing.assert_close(loss, manual, rtol=1e-6, atol=1e-5)


def test_the_position_rule_against_a_manual_forward(setup):
    """Each action token's predicting logit equals the last logit of a forward that stops just before it.

    Off by one anywhere (``n_prefix``, ``- 1``, the prompt length) and these differ.
    """
    vla, frames = setup
    batch = SequenceBuilder(vla, eos=True).build(frames)
    built = build_inputs(vla, frames)
    with torch.no_grad():
        logits = vla(**batch.model_inputs()).logits
        recorded = vla(**built["inputs"]).logits
        picked = predicting_text(logits, vla.n_prefix)[batch.labels[:, 1:] != IGNORE_INDEX]  # what the loss takes
        for b in (0, 1):
            n_prompt = int(batch.prompt_lengths[b])
            ids = batch.input_ids[b:b + 1]
            extra = {} if batch.proprio is None else {"proprio": batch.proprio[b:b + 1]}
            for k in (0, 3, 6):
                alone = vla(input_ids=ids[:, :n_prompt + k], pixel_values=batch.pixel_values[b:b + 1], **extra).logits
                expected = alone[0, -1]  # predicts action token k
                torch.testing.assert_close(logits[b, batch.predicting(batch.action_positions[b, k])], expected,
                                           rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(picked[b * 8 + k], expected, rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(recorded[b, built["end"][b, k]], expected, rtol=1e-4, atol=1e-4)
    # action_logprob sums exactly the logits at those positions
    manual = torch.stack([recorded[b, built["end"][b, :-1]].float().log_softmax(-1)
                          .gather(-1, built["targets"][b][:, None]).sum() for b in range(3)])
    torch.testing.assert_close(action_logprob(recorded, built["end"], built["targets"]), manual)


def test_training_and_recording_batches_agree_on_shared_positions(setup):
    vla, frames = setup
    train = BatchBuilder(vla).collate(frames)
    record = SequenceBuilder(vla).build(frames)
    for name in ("prompt_lengths", "first_action", "last_prompt", "action_positions", "action_ids"):
        assert torch.equal(getattr(train, name), getattr(record, name)), name
    assert train.input_ids.shape[1] == record.input_ids.shape[1] + 1  # the EOS column
    assert torch.equal(train.input_ids[:, :-1] * record.attention_mask, record.input_ids * record.attention_mask)
    assert torch.equal(train.pixel_values, record.pixel_values)
    built = build_inputs(vla, frames)
    assert torch.equal(built["end"][:, 0], record.last_prompt) and torch.equal(built["end"][:, 1:], record.action_positions)
    assert torch.equal(built["targets"], record.action_ids)
    with torch.no_grad():  # one frame, no padding: the causal model gives the same logits at the shared positions
        a = vla(**BatchBuilder(vla).collate(frames[:1]).model_inputs()).logits[0, :-1]
        b = vla(**SequenceBuilder(vla).build(frames[:1]).model_inputs()).logits[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_frames_and_mappings_build_the_same_batch(setup):
    vla, frames = setup
    as_frames = [Frame.coerce(f) for f in frames]
    a, b = SequenceBuilder(vla).build(frames), SequenceBuilder(vla).build(as_frames)
    for name in ("input_ids", "attention_mask", "labels", "pixel_values", "prompt_lengths"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert (a.proprio is None) == (vla.config.proprio_dim == 0)
    assert ("proprio" in a.model_inputs()) == (a.proprio is not None)
    assert as_frames[0].keyframe and not as_frames[1].keyframe and as_frames[1].step == 1 and as_frames[2].episode == 1
    assert Frame.coerce(as_frames[0]) is as_frames[0]
    wide = SequenceBuilder(vla, eos=True).build(frames, pad_to=40)
    assert wide.input_ids.shape[1] == 40 and torch.equal(wide.action_positions, a.action_positions)
    with pytest.raises(ValueError, match="pad_to=5 is shorter"):
        SequenceBuilder(vla).build(frames, pad_to=5)


def test_views_and_chunks_are_parameters_refused_until_the_model_takes_them():
    vla = tiny_vla(seed=0)
    with pytest.raises(ValueError, match=r"n_views=2: this model takes one image per observation"):
        SequenceBuilder(vla, n_views=2)
    with pytest.raises(ValueError, match=r"chunk=4: this model predicts one action per step"):
        SequenceBuilder(vla, chunk=4)
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        SequenceBuilder(vla, chunk=0)
    assert SequenceBuilder(vla, n_views=1, chunk=1).n_actions == 7


def test_frame_errors_name_the_field():
    with pytest.raises(ValueError, match=r"frame 3 lacks \['instruction'\]"):
        Frame.coerce({"image": np.zeros((4, 4, 3), np.uint8), "action": np.zeros(7)}, "frame 3")
    with pytest.raises(TypeError, match="expected a robosteer.data.frames.Frame or a mapping"):
        Frame.coerce([1, 2, 3])
    frame = Frame.coerce({"image": np.zeros((4, 4, 3), np.uint8), "instruction": "go", "action": np.zeros(7),
                          "frame": 5, "keyframes": {"is_first": True}})
    assert frame.step == 5 and frame.keyframe and frame.proprio is None and frame.episode == 0
    with pytest.raises(ValueError, match="frame 0 has no proprio"):
        check_frame(frame, 0, action_dim=7, proprio_dim=7)
    with pytest.raises(ValueError, match=r"action must have shape \(2, 7\)"):
        check_frame(frame, 0, action_dim=7, proprio_dim=0, chunk=2)
    with pytest.raises(ValueError, match="frame 1 lacks"):
        SequenceBuilder(tiny_vla(seed=0)).build([frame, {"image": frame.image}])


def tiny_oft(chunk: int = 4):
    """A tiny model with OpenVLA-OFT's switches on: two views, MLP proprio projector, a regression head."""
    from robosteer.models.loading import build_vla_from_config
    from robosteer.models.tiny import tiny_config

    cfg, tok = tiny_config(proprio_dim=7)
    cfg = cfg.replace(n_views=2, action_chunk=chunk, action_head="l1-regression", proprio_projector="mlp",
                      normalization="bounds_q99")
    return build_vla_from_config(cfg, tokenizer=tok, seed=3).eval()


def oft_frames(n: int, chunk: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    frames = []
    for i, frame in enumerate(make_frames(n, 7, seed)):
        wrist = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
        frame.update(views={"agentview": frame["image"], "wrist": wrist}, action=rng.uniform(-0.9, 0.9, (chunk, 7)))
        frames.append(frame)
    return frames


def test_a_parallel_decoding_model_gets_views_chunks_and_zero_action_slots():
    torch.set_num_threads(1)
    vla, frames = tiny_oft(chunk=4), oft_frames(3, chunk=4)
    assert vla.n_prefix == 1 + 2 * 4 + 1 and vla.n_action_slots == 28
    builder = SequenceBuilder(vla)  # n_views and chunk follow the model
    assert (builder.n_views, builder.chunk, builder.n_actions, builder.eos) == (2, 4, 28, True)
    batch = builder.build(frames)
    assert tuple(batch.pixel_values.shape) == (3, 12, 28, 28) and tuple(batch.actions.shape) == (3, 4, 7)
    # the targets: OFT's clipped bounds_q99 normalisation of each frame's chunk
    from robosteer.models.action_heads import oft_normalize

    stats = vla.norm_stats()["action"]
    assert torch.equal(batch.actions[1], torch.as_tensor(oft_normalize(frames[1]["action"], stats, "bounds_q99"),
                                                         dtype=torch.float32))
    embeds, _ = vla.embed(batch.input_ids, batch.pixel_values, batch.attention_mask, batch.proprio)
    for b in range(3):
        n_text = int(batch.attention_mask[b].sum())
        assert n_text == int(batch.prompt_lengths[b]) + 28 + 1
        assert int(batch.input_ids[b, n_text - 1]) == vla.tokenizer.eos_token_id  # the stop token closes the slots
        assert bool((embeds[b, batch.action_positions[b]] == 0).all())
        assert int(batch.first_action[b]) == int(batch.action_positions[b, 0])
        others = torch.ones(embeds.shape[1], dtype=torch.bool)
        others[batch.action_positions[b]] = False
        others[text_position(n_text, vla.n_prefix):] = False  # padding
        assert bool((embeds[b, others] != 0).any(dim=-1).all())
    # the views are the frames' images, in camera order (view 0's channels first)
    assert torch.equal(batch.pixel_values[0, 6:], vla.processor([frames[0]["views"]["wrist"]])[0])
    # one pass over the padded batch: each row's chunk is the chunk predicted for that row alone
    with torch.no_grad():
        out = vla(**batch.model_inputs(), output_hidden_states=True)
        for b in range(3):
            prompt = batch.input_ids[b:b + 1, :int(batch.prompt_lengths[b])]
            alone = vla.predict_chunk(prompt, batch.pixel_values[b:b + 1], batch.proprio[b:b + 1])
            read = out.hidden_states[-1][b, batch.predicting(batch.action_positions[b])]
            torch.testing.assert_close(read, alone.hidden[0], rtol=1e-5, atol=1e-5)
            assert alone.actions.shape == (1, 4, 7)


def test_training_and_recording_batches_on_a_parallel_decoding_model():
    from robosteer.circuits.record import RecordConfig, record_heads

    torch.set_num_threads(1)
    vla, frames = tiny_oft(chunk=2), oft_frames(4, chunk=2)
    batch = BatchBuilder(vla).collate(frames)
    assert tuple(batch.action_positions.shape) == (4, 14) and batch.actions is not None
    acts = record_heads(vla, frames, RecordConfig(towers=("llm",), position="first_action", keyframes_only=False),
                        progress=False)
    z = acts.acts["llm"]  # (N, L, H, D) at the first action slot
    assert tuple(z.shape[:3]) == (4, 2, 4)
    seq = SequenceBuilder(vla).build(frames)
    _, cache = vla.run_with_cache(**seq.model_inputs(), names_filter="llm.blocks.1.attn.hook_z")
    rows = torch.arange(4)
    torch.testing.assert_close(z[:, 1], cache["llm.blocks.1.attn.hook_z"][rows, seq.first_action].float())
    with pytest.raises(ValueError, match="chunks of 2 actions"):
        SequenceBuilder(vla, chunk=1)
    with pytest.raises(ValueError, match="frame 0 has 1 camera view"):
        SequenceBuilder(vla).build([{k: v for k, v in frames[0].items() if k != "views"}])


def test_the_l1_loss_reads_the_positions_before_the_slots_and_trains():
    from robosteer.models.action_heads import chunk_from_batch, l1_action_loss

    torch.manual_seed(0)
    vla, frames = tiny_oft(chunk=2), oft_frames(3, chunk=2)
    batch = SequenceBuilder(vla).build(frames)
    with torch.no_grad():
        chunks = chunk_from_batch(vla, batch)
        for b in range(3):
            prompt = batch.input_ids[b:b + 1, :int(batch.prompt_lengths[b])]
            alone = vla.predict_chunk(prompt, batch.pixel_values[b:b + 1], batch.proprio[b:b + 1]).normalized[0]
            torch.testing.assert_close(chunks[b], alone, rtol=1e-5, atol=1e-5)
    vla.train()
    optimizer = torch.optim.Adam(vla.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = l1_action_loss(vla, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert vla.action_head.model.fc1.weight.grad is not None and vla.proprio_projector.fc1.weight.grad is not None
    assert losses[-1] < losses[0]

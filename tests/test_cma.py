"""The CMA selector's model-forward loop (``circuits.mediation.cma_head_scores``, ``discover --method cma``).

Each case is a tiny model with the real architecture: action tokens (with and without proprio, GQA) and an
action-chunk model (L1 regression head, two camera views, K=2). The loop's scores must equal a slow reference
written here with plain PyTorch pre-hooks on ``o_proj`` (one head, one frame, ``predict_action`` without a KV
cache at a time), on those models and on the shipped trained policy; and a head made decisive by scaling its
slice of ``o_proj`` must rank first. (A random tiny token model's greedy tokens hardly ever flip when one head at
one position changes, so the cases compare on models with one head made decisive, where several heads do.)
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from robosteer.circuits.config import DiscoverConfig
from robosteer.circuits.mediation import cma_head_scores
from robosteer.data.frames import Frame
from robosteer.models.loading import build_vla_from_config
from robosteer.models.sequence import SequenceBuilder
from robosteer.models.tiny import tiny_vla
from robosteer.sites import Head

INSTRUCTIONS = ("pick up the red cube", "push the blue block to the left of the plate")  # two prompt lengths


def _chunk_model():
    base = tiny_vla(seed=2, llm_layers=3, llm_heads=4, llm_kv_heads=2, proprio_dim=7)
    cfg = base.config.replace(action_head="l1-regression", action_chunk=2, n_views=2, proprio_projector="mlp")
    return build_vla_from_config(cfg, tokenizer=base.tokenizer, seed=7).eval()


MODELS = {
    "tokens-proprio": lambda: tiny_vla(seed=1, proprio_dim=7),
    "tokens-gqa": lambda: tiny_vla(seed=3, llm_layers=3, llm_heads=4, llm_kv_heads=2),
    "l1-chunk2-views2": _chunk_model,
}


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    """(name, model, frames, head): the model with ``head`` made decisive (``decisive``, 10x)."""
    torch.set_num_threads(1)
    vla = MODELS[request.param]()
    frames = make_frames(vla, 7)
    sensitive, head = decisive(vla, frames, 10.0)
    return request.param, sensitive, frames, head


def make_frames(vla, n: int, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    size, chunk = vla.config.image_size, vla.config.action_chunk
    frames = []
    for i in range(n):
        views = {name: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                 for name in ("agentview", "wrist")[:vla.config.n_views]}
        action = rng.uniform(-0.9, 0.9, (chunk, 7))
        frames.append(Frame(image=views["agentview"], instruction=INSTRUCTIONS[i % 2],
                            action=action[0] if chunk == 1 else action, episode=i, step=0,
                            proprio=rng.uniform(-1, 1, 7) if vla.config.proprio_dim else None,
                            views=views if len(views) > 1 else {}))
    return frames


# --- the slow reference: hand-made pre-hooks on o_proj, one head and one frame at a time -------------------
def o_proj(vla, layer: int):
    return vla.language_model.model.layers[layer].self_attn.o_proj


def head_dim(vla) -> int:
    return vla.config.llm_dim // vla.head_layout.shape("llm")[1]


def hand_means(vla, frames) -> dict[int, torch.Tensor]:
    """Per layer, the mean (over frames) o_proj input at the first action token, teacher-forced: (H * D,)."""
    batch = SequenceBuilder(vla).build(frames)
    seen, handles = {}, []
    for layer in range(vla.head_layout.shape("llm")[0]):
        handles.append(o_proj(vla, layer).register_forward_pre_hook(
            lambda module, args, layer=layer: seen.__setitem__(layer, args[0].detach().clone())))
    try:
        with torch.no_grad():
            vla(**batch.model_inputs())
    finally:
        for handle in handles:
            handle.remove()
    rows = torch.arange(len(frames))
    return {layer: x[rows, batch.first_action].double().mean(0).float() for layer, x in seen.items()}


def hand_predict(vla, frame: Frame, head: Head | None = None, mean: torch.Tensor | None = None) -> np.ndarray:
    """``predict_action`` (no KV cache: every step recomputes the sequence) with ``head``'s o_proj input at the first
    action token set to ``mean``; the first action of the prediction."""
    position = vla.n_prefix - 1 + vla.tokenize(frame.instruction).shape[1]
    d = head_dim(vla)

    def replace(module, args):
        x = args[0]
        if x.shape[1] > position:  # the first action token is in this step's sequence
            x = x.clone()
            x[:, position, head.head * d:(head.head + 1) * d] = mean[head.head * d:(head.head + 1) * d]
            return (x,)

    handle = o_proj(vla, head.layer).register_forward_pre_hook(replace) if head is not None else None
    try:
        image = frame.image if vla.config.n_views == 1 else list(frame.images)
        action = vla.predict_action(image, frame.instruction, proprio=frame.proprio, use_cache=False)
    finally:
        if handle is not None:
            handle.remove()
    return np.asarray(action, dtype=np.float64).reshape(-1, 7)[0]


def reference_cma(vla, frames, heads=None) -> tuple[dict[Head, float], float]:
    means = hand_means(vla, frames)
    y = np.stack([np.asarray(f.action, dtype=np.float64).reshape(-1, 7)[0] for f in frames])
    base = np.stack([hand_predict(vla, f) for f in frames])
    base_mse = float(np.mean((base - y) ** 2))
    scores = {}
    for head in vla.head_layout.heads("llm") if heads is None else heads:
        pred = np.stack([hand_predict(vla, f, head, means[head.layer]) for f in frames])
        scores[head] = float(np.mean((pred - y) ** 2)) - base_mse
    return scores, base_mse


def decisive(vla, frames, scale: float):
    """A copy of ``vla`` whose last-layer head with the most varying output at the first action token (over
    ``frames``) has its ``o_proj`` slice scaled by ``scale``, and that head. Replacing a head by its mean can only
    matter where its output varies from frame to frame; scaled, this one dominates the residual stream that
    predicts the next action token."""
    from robosteer.circuits.record import RecordConfig, record_heads
    from robosteer.circuits.variance import variance_scores

    acts = record_heads(vla, frames, RecordConfig(towers=("llm",), keyframes_only=False), progress=False)
    variance = variance_scores({"llm": acts.acts["llm"]}, layout=vla.head_layout)
    last = vla.head_layout.shape("llm")[0] - 1
    head = next(h for h in variance.top(None) if h.layer == last)
    out, d = copy.deepcopy(vla), head_dim(vla)
    with torch.no_grad():
        o_proj(out, head.layer).weight[:, head.head * d:(head.head + 1) * d] *= scale
    return out, head


def assert_matches_reference(name, vla, frames, heads=None):
    scores = cma_head_scores(vla, frames, heads=heads, batch_size=3, heads_per_batch=3, progress=False)
    expected, base_mse = reference_cma(vla, frames, heads)
    assert list(scores.heads) == list(expected)
    assert scores.meta["baseline_mse"] == pytest.approx(base_mse, rel=1e-6, abs=1e-9)
    # the loop batches frames and heads, the reference runs one row: float32 sums differ in the last bits
    assert scores.values("cma") == pytest.approx([expected[h] for h in scores.heads], rel=1e-4, abs=1e-6)
    assert scores.values("cma/mse") == pytest.approx([expected[h] + base_mse for h in scores.heads], rel=1e-4,
                                                     abs=1e-6)
    moved = np.abs(scores.values("cma")) > 1e-9
    assert moved.sum() >= 2, f"{name}: almost no head changes a prediction; the comparison would prove nothing"
    print(f"\n{name}: {moved.sum()} of {len(moved)} heads change the predicted action; top {scores.top(3, 'cma')}")


def test_scores_equal_a_slow_reference_loop(case):
    name, vla, frames, _ = case
    assert_matches_reference(name, vla, frames)


def test_scores_of_the_trained_default_policy_equal_the_reference():
    """The shipped policy as it is (trained: its heads carry what they read), on the heads of its first layer."""
    from robosteer.models import load_vla

    torch.set_num_threads(1)
    vla = load_vla("default").eval()
    assert_matches_reference("default policy", vla, make_frames(vla, 4), heads=vla.head_layout.heads("llm")[:8])


@pytest.mark.parametrize("batch_size, heads_per_batch", [(1, 1), (7, 12)])
def test_batching_does_not_change_the_scores(case, batch_size, heads_per_batch):
    _, vla, frames, _ = case
    a = cma_head_scores(vla, frames, batch_size=3, heads_per_batch=3, progress=False)
    b = cma_head_scores(vla, frames, batch_size=batch_size, heads_per_batch=heads_per_batch, progress=False)
    assert b.values("cma") == pytest.approx(a.values("cma"), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("scale", [10.0, 40.0])
def test_a_decisive_head_ranks_first(case, scale):
    """The demonstrated actions are the decisive model's own predictions (baseline MSE 0), so any change raises the
    error; the head whose output dominates changes the action most."""
    name, _, frames, _ = case
    vla, head = decisive(MODELS[name](), frames, scale)
    own = [Frame(**{**f.__dict__, "action": predict(vla, f)}) for f in frames]
    scores = cma_head_scores(vla, own, progress=False)
    assert scores.meta["baseline_mse"] == pytest.approx(0.0, abs=1e-12)
    assert scores.top(1, "cma") == [head], f"{name}: {scores.to_frame().sort_values('cma').tail(3)}"


def predict(vla, frame: Frame) -> np.ndarray:
    image = frame.image if vla.config.n_views == 1 else list(frame.images)
    return np.asarray(vla.predict_action(image, frame.instruction, proprio=frame.proprio), dtype=np.float64)


def test_discover_method_cma_selects_the_top_heads(tmp_path):
    from robosteer.circuits.discover import discover

    torch.set_num_threads(1)
    base = MODELS["tokens-proprio"]()
    frames = make_frames(base, 4)
    vla, _ = decisive(base, frames, 10.0)
    frames[1] = Frame(**{**frames[1].__dict__, "keyframes": {"keyframe": True}})
    frames[2] = Frame(**{**frames[2].__dict__, "keyframes": {"keyframe": True}})
    result = discover(vla, frames, DiscoverConfig(method="cma", top_k=3), out=tmp_path)
    assert result.column == "cma" and result.scores.method == "cma" and len(result.scores.heads) == 8
    assert set(result.mask.heads) == set(result.scores.top(3, "cma"))
    assert result.scores.data.startswith("2 frames")  # the two keyframes
    expected = cma_head_scores(vla, frames[1:3], progress=False)
    assert np.array_equal(result.scores.values("cma"), expected.values("cma"))
    assert (tmp_path / "scores.csv").is_file() and (tmp_path / "mask.json").is_file()


@pytest.mark.parametrize("changes, message", [
    ({"towers": ("llm", "dino")}, "towers=\\('llm',\\) and position='first_action'"),
    ({"position": "last_prompt"}, "position='first_action', got .*'last_prompt'"),
])
def test_cma_config_refuses_other_towers_and_positions(changes, message):
    with pytest.raises(ValueError, match=message):
        DiscoverConfig(method="cma", **changes)


def test_cma_refuses_vision_heads_and_empty_inputs(tiny_vla):
    with pytest.raises(ValueError, match="cma scores LLM heads"):
        cma_head_scores(tiny_vla, make_frames(tiny_vla, 2), heads=["dino.L0H0"], progress=False)
    with pytest.raises(ValueError, match="at least one frame"):
        cma_head_scores(tiny_vla, [], progress=False)

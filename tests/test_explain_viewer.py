"""The rollout viewer (``robosteer.explanation.viewer``) and ``robosteer explain`` (``robosteer.app.explain_episode``).

- the page builder, on synthetic rollouts and on a tiny model's explanations (fast, no simulator): the page is
  self-contained (plotly.js inlined once, nothing fetched), its embedded data say what ``explain.json`` says,
  frames, effects and attention survive the encoding, bad rollouts are refused;
- the command: one short closed-loop episode of the default policy, one of a heads adapter against its base,
  and its bad inputs (clear errors, exit status 2).

``tests/test_browser.py`` opens the page in a headless browser.
"""

from __future__ import annotations

import base64
import html as html_module
import io
import json
import re

import numpy as np
import pytest
import torch

import robosteer
from robosteer.cli import main
from robosteer.explanation.viewer import ExplainedRollout, ExplainedStep, build_viewer, episode_json, explained_step

from .explain_helpers import TEXT, heads_adapted

NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


def synthetic_rollout(views=("agentview",), length: int = 6, every: int = 1, base: bool = False, grid: int = 4,
                      size: int = 32, n_layers: int = 2, n_heads: int = 4, seed: int = 0, **changes) -> ExplainedRollout:
    """A rollout of made-up data: a white square moves one pixel per step (so every frame differs)."""
    rng = np.random.default_rng(seed)
    heads = tuple(f"llm.L{l}H{h}" for l in range(n_layers) for h in range(n_heads))
    frames = np.full((length + 1, len(views), size, size, 3), 60, dtype=np.uint8)
    for t in range(length + 1):
        frames[t, :, 4:10, t % (size - 6):t % (size - 6) + 6] = 255
        frames[t, 1:] //= 2  # the second view darker than the first
    actions = rng.uniform(-1, 1, (length, len(NAMES)))
    steps = []
    for t in range(0, length, every):
        attention = rng.dirichlet(np.ones(grid * grid * len(views) + 1), len(heads))[:, :-1]  # rest: BOS etc.
        extra = dict(base_action=actions[t] + 0.1, delta=rng.normal(size=(len(heads), len(NAMES)))) if base else {}
        steps.append(ExplainedStep(step=t, action=actions[t], effects=rng.normal(size=(len(heads), len(NAMES))),
                                   attention=attention.reshape(len(heads), len(views), grid, grid), **extra))
    fields = dict(task="lift/base", seed=3, instruction="pick up the <red> cube", success=False, policy="default",
                  heads=heads, action_names=NAMES, views=views, frames=frames, actions=actions, steps=tuple(steps),
                  base="default" if base else None, every=every, top=5)
    return ExplainedRollout(**{**fields, **changes})


def page_data(page: str) -> dict:
    """The JSON the page's script reads."""
    match = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', page, re.S)
    assert match, "the page embeds no viewer data"
    return json.loads(match.group(1))


def _png(uri: str) -> np.ndarray:
    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


# --------------------------------------------------------------------- the page builder
CASES = {"one view": dict(), "two views, base, every 2nd step": dict(views=("agentview", "wrist"), base=True, every=2),
         "starred heads, a chosen head": dict(highlight=("llm.L1H2", "llm.L0H0"), head="llm.L0H3")}


@pytest.mark.parametrize("case", CASES)
def test_the_page_is_self_contained_and_says_what_the_json_says(case):
    rollout = synthetic_rollout(**CASES[case])
    page, record = build_viewer(rollout), episode_json(rollout)
    assert page.count("plotly.js v") == 1  # plotly.js's banner: the library is inlined exactly once
    assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*\shref=|<(img|iframe)[^>]*\ssrc=[\"']?https?:", page)
    assert html_module.escape(rollout.instruction) in page and "<red>" not in page.split("<script")[0]
    data = page_data(page)
    json.loads(json.dumps(record, allow_nan=False))  # explain.json is plain JSON
    assert data["success"] == record["success"] is False and data["length"] == record["length"] == rollout.length
    assert data["actions"] == record["actions"]
    assert [s["step"] for s in data["steps"]] == [s["step"] for s in record["steps"]] == list(range(0, 6, rollout.every))
    for shown, saved in zip(data["steps"], record["steps"]):
        assert shown["top"] == [t["head"] for t in saved["top"]] and len(shown["top"]) == rollout.top
        assert (shown["base_action"] is None) == (rollout.base is None) == ("base_action" not in saved)
    assert data["explained_index"] == [min(t // rollout.every, len(rollout.steps) - 1) for t in range(7)]
    assert len(data["frames"]) == 7 and all(len(f) == len(rollout.views) for f in data["frames"])
    for t in (0, 6):
        for v in range(len(rollout.views)):
            np.testing.assert_array_equal(_png(data["frames"][t][v]), rollout.frames[t, v])  # lossless
    assert ('id="quantity"' in page) == (rollout.base is not None)
    assert len([d for d in data["figures"]["actions"]["data"] if d["name"].startswith("base")]) == (
        len(NAMES) if rollout.base else 0)
    for head in rollout.highlight:
        assert f"★ {head}</option>" in page
    assert data["head"] == rollout.head


def test_effects_and_attention_survive_the_encoding():
    rollout = synthetic_rollout(views=("agentview", "wrist"), base=True)
    data = page_data(build_viewer(rollout))
    effects = np.frombuffer(base64.b64decode(data["effects"]), "<f4").reshape(len(rollout.steps), -1, len(NAMES))
    delta = np.frombuffer(base64.b64decode(data["delta"]), "<f4").reshape(effects.shape)
    np.testing.assert_array_equal(effects, np.stack([s.effects for s in rollout.steps]).astype(np.float32))
    np.testing.assert_array_equal(delta, np.stack([s.delta for s in rollout.steps]).astype(np.float32))
    maps = np.stack([s.attention for s in rollout.steps])  # (E, n_heads, n_views, g, g)
    q = np.frombuffer(base64.b64decode(data["attention"]["q"]), np.uint8).reshape(maps.shape)
    peak = np.array(data["attention"]["max"])[..., None, None]
    np.testing.assert_allclose(q / 255 * peak, maps, atol=float(peak.max()) / 255 / 2 + 1e-6)
    np.testing.assert_allclose(data["attention"]["mass"], maps.sum(axis=(3, 4)), atol=1e-6)


def test_the_top_heads_rank_by_summed_absolute_effect_ties_in_head_order():
    effects = np.zeros((8, 7))
    effects[5] = [0, 0, -3, 0, 0, 0, 0]  # |sum| 3 though negative
    effects[2] = [1, 1, 0, 0, 0, 0, 0]  # 2
    effects[6] = [0, 0, 0, 0, 0, 0, 2]  # 2, after head 2
    effects[0] = [0.5, 0, 0, 0, 0, 0, 0]
    rollout = synthetic_rollout(length=1)
    step = ExplainedStep(step=0, action=np.zeros(7), effects=effects, attention=rollout.steps[0].attention)
    ranked = ExplainedRollout(**{**rollout.__dict__, "steps": (step,), "top": 4}).top_heads(0)
    assert ranked == [("llm.L1H1", 3.0), ("llm.L0H2", 2.0), ("llm.L1H2", 2.0), ("llm.L0H0", 0.5)]


BAD = {  # changes to a synthetic rollout -> what the error says
    "steps not from step 0": (lambda r: dict(steps=r.steps[1:]), "starting at 0"),
    "steps out of order": (lambda r: dict(steps=r.steps[::-1]), "ascending"),
    "unknown starred head": (lambda r: dict(highlight=("llm.L7H0",)), "no LLM head 'llm.L7H0'"),
    "unknown shown head": (lambda r: dict(head="llm.L0H9"), "no LLM head 'llm.L0H9'"),
    "float frames": (lambda r: dict(frames=r.frames.astype(float)), "frames must be uint8"),
    "one action too many": (lambda r: dict(actions=np.zeros((7, 7))), r"actions must be \(T, A\)"),
    "base without base actions": (lambda r: dict(base="default"), "base_action exactly when base"),
    "unknown quantity": (lambda r: dict(quantity="logits"), "quantity must be one of"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_rollouts_are_refused(case):
    change, message = BAD[case]
    rollout = synthetic_rollout()
    with pytest.raises(ValueError, match=message):
        ExplainedRollout(**{**rollout.__dict__, **change(rollout)})


def test_a_step_with_nan_effects_is_refused():
    step = synthetic_rollout().steps[0]
    with pytest.raises(ValueError, match="effects must be finite"):
        ExplainedStep(step=0, action=step.action, effects=np.full(step.effects.shape, np.nan), attention=step.attention)


def test_a_tiny_models_explanation_becomes_a_step_and_a_page(tiny_vla):
    torch.set_num_threads(1)
    adapted = heads_adapted(tiny_vla, ["llm.L1H2"])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (tiny_vla.config.image_size,) * 2 + (3,), dtype=np.uint8)
    ex = robosteer.explain(adapted, image, TEXT, base=tiny_vla)
    step = explained_step(0, ex)
    np.testing.assert_array_equal(step.effects, ex.to_frame().to_numpy())
    np.testing.assert_array_equal(step.delta, ex.to_frame(delta=True).to_numpy())
    np.testing.assert_array_equal(step.action, ex.action[0])
    np.testing.assert_array_equal(step.base_action, ex.base.action[0])
    for i, head in enumerate(ex.heads):
        np.testing.assert_array_equal(step.attention[i, 0], ex.attention.patches(head, view=0))
    frames = np.stack([image, image[::-1]])[:, None]  # (T + 1, 1 view, H, W, 3)
    rollout = ExplainedRollout(task="lift/base", seed=0, instruction=TEXT, success=True, policy="policy.json",
                               heads=tuple(map(str, ex.heads)), action_names=ex.action_names, views=("agentview",),
                               frames=frames, actions=ex.action[:1], steps=(step,), base="base", highlight=("llm.L1H2",))
    summed = ex.to_frame().abs().sum(axis=1).sort_values(ascending=False, kind="stable")
    assert [h for h, _ in rollout.top_heads(0)] == list(summed.index[:rollout.top])
    page = build_viewer(rollout)
    assert page_data(page)["grid"] == ex.attention.grid and "★ llm.L1H2" in page


# --------------------------------------------------------------------- the command
def _outputs(out) -> tuple[dict, dict, str]:
    record = json.loads((out / "explain.json").read_text())
    page = (out / "viewer.html").read_text()
    return record, page_data(page), page


def test_the_command_explains_a_short_episode_of_the_default_policy(tmp_path):
    out = tmp_path / "explain"
    assert main(["explain", "--task", "lift", "--seed", "0", "--steps", "5", "--every", "2", "--head", "llm.L5H6",
                 "--out", str(out)]) == 0
    record, data, page = _outputs(out)
    assert record["format"] == "robosteer.explain_episode" and record["task"] == "lift/base"
    assert record["length"] == 5 and len(record["actions"]) == 5 and isinstance(record["success"], bool)
    assert [s["step"] for s in record["steps"]] == [0, 2, 4] and record["base"] is None
    assert record["views"] == ["agentview", "wrist"]  # no --cameras: the default policy's own two views
    for s in record["steps"]:  # the explained action is the executed one (same model, same observation)
        np.testing.assert_allclose(list(s["action"].values()), record["actions"][s["step"]], atol=1e-5)
        assert len(s["top"]) == 10 and all(t["head"].startswith("llm.L") for t in s["top"])
        assert [t["score"] for t in s["top"]] == sorted((t["score"] for t in s["top"]), reverse=True)
    assert data["actions"] == record["actions"] and data["success"] == record["success"]
    assert [s["top"] for s in data["steps"]] == [[t["head"] for t in s["top"]] for s in record["steps"]]
    assert len(data["frames"]) == 6 and data["head"] == "llm.L5H6" and len(data["heads"]) == 48
    assert html_module.escape(record["instruction"]) in page and page.count("plotly.js v") == 1


def test_an_adapter_is_explained_against_its_base(tmp_path):
    from robosteer.app.policy import write_policy_file
    from robosteer.masks import HeadMask
    from robosteer.models import load_vla
    from robosteer.train.adapters import save_heads_adapter
    from robosteer.train.strategies import make_strategy

    torch.set_num_threads(1)
    vla = load_vla("default")
    strategy = make_strategy("heads", mask=HeadMask.from_heads(["llm.L5H6", "llm.L4H1"], vla.head_layout))
    strategy.prepare(vla)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in strategy.deltas.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if ".o" in name or name.endswith("_o") else 0.05))
    save_heads_adapter(strategy.deltas, tmp_path / "adapter")
    spec = write_policy_file(tmp_path / "policy.json", base="default", adapter=tmp_path / "adapter")
    out = tmp_path / "explain"
    assert main(["explain", "--policy", str(spec), "--task", "push", "--seed", "1", "--steps", "3",
                 "--out", str(out)]) == 0
    record, data, page = _outputs(out)
    assert record["base"] == "default" and record["highlight"] == ["llm.L4H1", "llm.L5H6"]
    assert all("base_action" in s for s in record["steps"]) and len(record["steps"]) == 3
    assert 'id="quantity"' in page and "★ llm.L5H6</option>" in page and "the heads the adapter trained" in page
    delta = np.frombuffer(base64.b64decode(data["delta"]), "<f4").reshape(3, 48, 7)
    changed = np.abs(delta[0]).sum(1)  # the adapter's heads changed most (an o slice changes the head's output)
    assert data["heads"][int(changed.argmax())] in ("llm.L4H1", "llm.L5H6")


COMMAND_ERRORS = {  # flags -> what the error says (exit status 2, nothing written)
    "unknown task": (["--task", "fly"], "unknown task family 'fly'"),
    "unknown variation": (["--task", "lift/upside_down"], "unknown variation 'upside_down'"),
    "negative seed": (["--task", "lift", "--seed", "-1"], "seed must be >= 0"),
    "malformed head": (["--task", "lift", "--head", "L3"], "cannot parse head 'L3'"),
    "head not in the model": (["--task", "lift", "--head", "llm.L9H0"], "llm.L9H0 does not exist: tower 'llm' has 6"),
    "vision head": (["--task", "lift", "--head", "dino.L0H0"], "only LLM heads"),
    "the expert": (["--task", "lift", "--policy", "expert"], "no attention heads"),
    "too few cameras": (["--task", "lift", "--cameras", "agentview"], "this policy takes 2"),
    "zero steps": (["--task", "lift", "--steps", "0"], "steps must be >= 1"),
}


@pytest.mark.parametrize("case", COMMAND_ERRORS)
def test_bad_inputs_give_clear_errors(case, tmp_path, capsys):
    flags, message = COMMAND_ERRORS[case]
    assert main(["explain", "--out", str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

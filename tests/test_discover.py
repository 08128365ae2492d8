"""Head discovery end to end: sim probes, the discover function and the CLI."""

import json

import numpy as np
import pytest

from robosteer.app.sim_probes import SIM_PROBE_KINDS, corrupt_scene, sim_probe
from robosteer.sim.scene import sample_scene


@pytest.mark.parametrize("kind", SIM_PROBE_KINDS)
def test_corrupted_scene_changes_one_factor(kind):
    scene = sample_scene("lift/base", 1_000_003)
    twin = corrupt_scene(scene, kind)
    target, moved = scene.object("target"), twin.object("target")
    changed = {
        "visual": target.color != moved.color and twin.instruction == scene.instruction and target.xy == moved.xy,
        "linguistic": twin.instruction != scene.instruction and twin.objects == scene.objects,
        "physical": target.xy != moved.xy and target.color == moved.color and twin.instruction == scene.instruction,
        "environment": (twin.light, twin.table) != (scene.light, scene.table) and twin.objects == scene.objects,
    }[kind]
    assert changed


def test_relational_probes_swap_with_the_reference():
    scene = sample_scene("push/relational", 2_000_000)
    target, reference = scene.object("target"), scene.object("reference")
    old, new = f"{target.color} {target.shape}", f"{reference.color} {reference.shape}"
    twin = corrupt_scene(scene, "linguistic")
    assert twin.instruction == scene.instruction.replace(old, "@").replace(new, old).replace("@", new)
    assert twin.instruction != scene.instruction and twin.objects == scene.objects
    swapped = corrupt_scene(scene, "visual")
    assert swapped.object("target").color == reference.color and swapped.object("reference").color == target.color


def test_lookalike_probes_swap_shapes_where_every_distractor_has_the_target_colour():
    scene = sample_scene("lift/lookalikes", 2_000_239)
    target = scene.object("target")
    assert all(o.color == target.color and o.shape != target.shape for o in scene.objects if o.role != "target")
    swapped = corrupt_scene(scene, "visual")
    partner = next(i for i, (a, b) in enumerate(zip(scene.objects, swapped.objects)) if a != b and a.role != "target")
    assert swapped.object("target").shape == scene.objects[partner].shape
    assert swapped.objects[partner].shape == target.shape and swapped.object("target").xy == target.xy
    assert swapped.object("target").color == target.color and swapped.instruction == scene.instruction
    renamed = corrupt_scene(scene, "linguistic")
    assert renamed.instruction == scene.instruction.replace(f"{target.color} {target.shape}",
                                                            f"{target.color} {scene.objects[partner].shape}")
    assert renamed.objects == scene.objects


def test_sim_probe_on_an_unbuildable_task_raises_instead_of_looping(monkeypatch):
    import robosteer.app.sim_probes as sp

    def no_pair(scene, kind):
        raise ValueError("no partner")

    monkeypatch.setattr(sp, "corrupt_scene", no_pair)
    monkeypatch.setattr(sp, "MAX_DRAWS_PER_PAIR", 3)
    with pytest.raises(ValueError, match=r"cannot build a 'visual' probe on lift/base: 0 of 2 pairs after 6 .*no partner"):
        sp.sim_probe("visual", "lift/base", n=2, image_size=32)


def test_sim_probe_pairs_render_the_change():
    probe = sim_probe("visual", "lift/base", n=2, image_size=32)
    assert len(probe) == 2
    for clean, corrupt in probe.pairs:
        assert clean.image.shape == (32, 32, 3) and np.abs(clean.image.astype(int) - corrupt.image).sum() > 0
        assert clean.instruction == corrupt.instruction
        assert np.array_equal(clean.action, corrupt.action)


def test_sim_probe_renders_every_camera_view_of_both_sides():
    """For a two-view model the probe pairs carry the wrist view too, and the probe's change shows in it."""
    probe = sim_probe("visual", "lift/base", n=1, image_size=32, cameras=("agentview", "wrist"))
    (clean, corrupt), = probe.pairs
    for side in (clean, corrupt):
        assert list(side.views) == ["agentview", "wrist"] and np.array_equal(side.images[0], side.image)
    assert np.abs(clean.images[1].astype(int) - clean.images[0]).sum() > 0  # the wrist is another picture
    assert np.abs(clean.images[1].astype(int) - corrupt.images[1]).sum() > 0  # the swapped colours reach the wrist


@pytest.fixture(scope="module")
def demos_and_policy(tmp_path_factory):
    from robosteer.cli import main
    from robosteer.models.tiny import tiny_vla
    from robosteer.data.dataset import DemoDataset

    root = tmp_path_factory.mktemp("discover")
    assert main(["collect", "--task", "lift/base", "--episodes", "3", "--out", str(root / "demos"), "--image-size", "32"]) == 0
    demos = DemoDataset(root / "demos")
    vla = tiny_vla(seed=0, image_size=32, patch_size=8, proprio_dim=7, norm_stats=demos.statistics)
    vla.save_pretrained(root / "policy")
    return root


@pytest.mark.parametrize("method", ["knn", "random", "sav", "variance", "attribution"])
def test_discover_cli_writes_scores_mask_and_headmap(demos_and_policy, method, capsys):
    from robosteer.cli import main
    from robosteer.masks import HeadMask

    out = demos_and_policy / f"out-{method}"
    code = main(["discover", "--policy", str(demos_and_policy / "policy"), "--demos", str(demos_and_policy / "demos"),
                 "--method", method, "--top-k", "3", "--probes", "visual", "--probe-pairs", "2", "--out", str(out)])
    assert code == 0
    mask = HeadMask.from_json(out / "mask.json")
    assert len(mask) == 3 and all(h.tower == "llm" for h in mask.heads)
    html = (out / "headmap.html").read_text()
    assert "plotly" in html.lower() and str(mask.heads[0]) in html
    assert json.loads((out / "scores.json").read_text())
    assert "selected 3 heads" in capsys.readouterr().out
    if method == "variance":  # the release's variance selector: the top heads by total variance of their output
        from robosteer.circuits.scores import HeadScores

        scores = HeadScores.load(out / "scores.csv")
        values = scores.columns["total_variance"]
        top = [scores.heads[i] for i in np.argsort(-values, kind="stable")[:3]]
        assert set(top) == set(mask.heads) and values.min() >= 0 and values.max() > 0


def test_the_discovery_seed_draws_the_probe_scenes(monkeypatch):
    """Attribution/activation selection varies with the seed like kNN's does with the demonstrations: seed s
    builds its probes from other scenes (seed 0 keeps PROBE_SEED)."""
    from types import SimpleNamespace

    import robosteer.app.sim_probes as sim_probes
    from robosteer.circuits.discover import DiscoverConfig

    asked = []

    class Stop(Exception):
        pass

    def fake_probe(kind, task, n, seed, image_size, env=None, cameras=None):
        asked.append((kind, task, seed))
        raise Stop

    monkeypatch.setattr(sim_probes, "sim_probe", fake_probe)
    dataset = SimpleNamespace(tasks=["push/paraphrase"], image=lambda i: np.zeros((32, 32, 3), np.uint8))
    for seed in (0, 1, 2):
        with pytest.raises(Stop):
            sim_probes.discovery_probes(dataset, DiscoverConfig(method="attribution", probes=("visual",), seed=seed))
    assert [(k, t) for k, t, _ in asked] == [("visual", "push/paraphrase")] * 3
    starts = [s for _, _, s in asked]
    assert starts[0] == sim_probes.PROBE_SEED and len(set(starts)) == 3
    assert all(b - a >= sim_probes.MAX_DRAWS_PER_PAIR * DiscoverConfig().probe_pairs for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        DiscoverConfig(method="attribution", seed=-1)


def test_causal_discovery_scores_the_probes_it_is_given_and_builds_none(monkeypatch):
    """The circuits take probes as inputs: without them activation/attribution refuse clearly; with them no
    simulator is touched; the application's builder gives the kinds of config.probes in order, and none for kNN."""
    from types import SimpleNamespace

    import robosteer.app.sim_probes as sim_probes
    import robosteer.circuits.patching as patching
    from robosteer.circuits.discover import DiscoverConfig, score_heads
    from robosteer.circuits.probes import Probe
    from robosteer.circuits.scores import HeadScores
    from robosteer.sites import Head

    image = np.zeros((32, 32, 3), np.uint8)
    dataset = SimpleNamespace(tasks=["lift/base", "push/base", "push/base"], image=lambda i: image)
    for method in ("activation", "attribution"):
        with pytest.raises(ValueError, match=rf"method '{method}' scores heads on probes: pass probes=\[Probe"):
            score_heads(None, dataset, DiscoverConfig(method=method))
    frame = {"image": np.zeros((32, 32, 3), np.uint8), "instruction": "lift the red cube", "action": np.zeros(7)}
    probes = [Probe(name, ((frame, frame),), "custom") for name in ("mine", "yours")]
    with pytest.raises(ValueError, match="scored by the methods activation, attribution only; method is 'knn'"):
        score_heads(None, dataset, DiscoverConfig(method="knn"), probes=probes)

    seen = []

    def fake_attribution(vla, probe, towers, unnorm_key):
        seen.append(probe.name)
        column = f"attribution:{probe.name}"
        return HeadScores((Head("llm", 0, 0), Head("llm", 0, 1)), {column: [1.0, 2.0 + len(seen)]}, {column: True})

    monkeypatch.setattr(patching, "attribution_patching", fake_attribution)
    monkeypatch.setattr(sim_probes, "sim_probe", lambda *a, **kw: pytest.fail("discover must not build probes"))
    scores, column = score_heads(None, dataset, DiscoverConfig(method="attribution"), probes=probes)
    assert seen == ["mine", "yours"] and column == "attribution:combined"

    built = []
    monkeypatch.setattr(sim_probes, "sim_probe", lambda kind, **kw: built.append((kind, kw)) or kind)
    config = DiscoverConfig(method="activation", probes=("physical", "visual"), probe_pairs=5, seed=3)
    assert sim_probes.discovery_probes(dataset, config) == ["physical", "visual"]
    expected = dict(task="push/base", n=5, seed=sim_probes.probe_seed(3), image_size=32, cameras=None)
    assert built == [("physical", expected), ("visual", expected)]
    assert sim_probes.discovery_probes(dataset, DiscoverConfig(method="knn")) == [] and len(built) == 2

"""Task, variation and scene definitions of the sim suite (no simulator needed)."""

import dataclasses

import numpy as np
import pytest

from robosteer.data.keyframes import keyframe_flags
from robosteer.sim.predicates import WorldState, is_success
from robosteer.sim.scene import DIRECTIONS, PUSH_DISTANCE, sample_scene
from robosteer.data.statistics import dataset_statistics
from robosteer.sim.tasks import SPLITS, Task, all_tasks, get_split
from robosteer.sim.variations import AXES, VARIATIONS, SpatialAxis, VisualAxis, get_variation
from robosteer.intervals import newcombe_interval, wilson_interval


@pytest.mark.parametrize("task", all_tasks(), ids=str)
def test_every_task_instance_is_reproducible_from_its_seed(task):
    a, b = sample_scene(task, 11), sample_scene(task, 11)
    assert a == b
    assert sample_scene(task, 12) != a
    assert a.instruction and a.objects[0].role == "target"


def test_split_covers_every_axis_and_an_unseen_family():
    split = get_split("default")
    axes = {split.axis(t) for t in split.heldout}
    assert set(AXES) <= axes and "family" in axes
    for family in ("lift", "place", "push"):  # every axis in each pretraining family
        assert {split.axis(t) for t in split.heldout if t.family == family} == set(AXES), family
    assert {split.axis(t) for t in split.pretrain} == {"base"}
    assert not set(split.pretrain) & set(split.heldout)
    assert set(SPLITS) == {"default"}


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="lift, place, push, stack"):
        Task.parse("juggle")
    with pytest.raises(ValueError, match="paraphrase"):
        get_variation("nope")
    with pytest.raises(ValueError, match="default"):
        get_split("nope")


def test_configs_validate():
    with pytest.raises(ValueError, match="colour"):
        VisualAxis(target_colors=("mauve",))
    with pytest.raises(ValueError, match="half_sizes"):
        SpatialAxis(half_sizes=(0.1,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        VARIATIONS["base"].visual.n_distractors = 3  # type: ignore[misc]


def _same_draws(name, seed=3):
    """The base scene and the scene of one variation, from the same random stream."""
    return sample_scene("lift/base", seed), sample_scene("lift/base", seed, variation=VARIATIONS[name])


def test_linguistic_axis_changes_only_the_wording():
    changed = 0
    for seed in range(10):
        base, para = _same_draws("paraphrase", seed)
        assert [o.xy for o in base.objects] == [o.xy for o in para.objects]
        changed += base.instruction != para.instruction
    assert changed == 10


def test_spatial_axes_change_poses_sizes_and_references():
    base, far = _same_draws("far_region")
    assert all(o.xy[0] > 0.1 for o in far.objects) and all(o.xy[0] < 0.1 for o in base.objects)
    sizes = {o.half_size for s in range(20) for o in sample_scene("lift/physics", s).objects}
    assert sizes == {0.02, 0.03}
    rel = sample_scene("lift/relational", 5)
    target, twin, ref = rel.object("target"), rel.object("twin"), rel.object("reference")
    side = "left" if DIRECTIONS["left"] * (target.xy[1] - ref.xy[1]) > 0 else "right"
    assert f"to the {side} of the" in rel.instruction
    assert (target.color, target.shape) == (twin.color, twin.shape)
    assert np.sign(target.xy[1] - ref.xy[1]) != np.sign(twin.xy[1] - ref.xy[1])


def test_visual_and_environment_axes_change_their_settings():
    base, novel = _same_draws("novel_color")
    assert novel.objects[0].color in ("purple", "orange", "cyan") and base.objects[0].color != novel.objects[0].color
    assert len(sample_scene("lift/distractors", 0).objects) == 4
    assert _same_draws("lighting")[1].light != "default"
    assert _same_draws("table")[1].table != "default"
    b, c = _same_draws("camera_shift")
    assert b.camera_pos != c.camera_pos


def _world(scene, positions, grasped=None):
    pos = np.array(positions, dtype=float)
    return WorldState(
        object_pos=pos,
        start_xy=np.array([o.xy for o in scene.objects]),
        eef_pos=np.array([0.0, 0.0, 1.0]),
        eef_rotvec=np.zeros(3),
        gripper_width=0.08,
        grasped=tuple(grasped or [False] * len(scene.objects)),
    )


def _rest(scene):
    return [[o.xy[0], o.xy[1], 0.8 + o.half_size] for o in scene.objects]


def test_predicates_on_hand_made_states():
    lift = sample_scene("lift/base", 0)
    rest = _rest(lift)
    assert not is_success(lift, _world(lift, rest))
    up = [list(p) for p in rest]
    up[0][2] += 0.08
    assert is_success(lift, _world(lift, up))

    place = sample_scene("place/base", 0)
    on = _rest(place)
    on[0][:2] = place.plates[0].xy
    assert is_success(place, _world(place, on))
    assert not is_success(place, _world(place, on, grasped=[True, False]))
    assert not is_success(place, _world(place, _rest(place)))

    push = sample_scene("push/base", 0)
    moved = _rest(push)
    moved[0][1] += DIRECTIONS[push.direction] * (PUSH_DISTANCE + 0.01)
    assert is_success(push, _world(push, moved))
    moved[0][1] -= 2 * DIRECTIONS[push.direction] * (PUSH_DISTANCE + 0.01)
    assert not is_success(push, _world(push, moved))

    stack = sample_scene("stack/base", 0)
    s = stack.index("support")
    stacked = _rest(stack)
    stacked[0] = [stacked[s][0], stacked[s][1], stacked[s][2] + 2 * 0.025]
    assert is_success(stack, _world(stack, stacked))
    stacked[0][0] += 0.04
    assert not is_success(stack, _world(stack, stacked))


def test_keyframes_and_statistics():
    actions = np.zeros((6, 7), np.float32)
    actions[:, 0] = [1, 1, 0, 0, 1, 1]
    actions[:, 6] = [-1, -1, 1, 1, 1, -1]
    flags = keyframe_flags(actions)
    assert flags["gripper_flip"].tolist() == [False, False, True, False, False, True]
    assert flags["still"].tolist() == [False, False, True, True, False, False]
    assert flags["is_first"][0] and flags["is_last"][-1] and flags["is_first"].sum() == 1
    stats = dataset_statistics("x", actions, np.ones((6, 7)), 2)["x"]
    assert stats["action"]["mask"] == [True] * 6 + [False]
    assert stats["num_transitions"] == 6 and stats["num_trajectories"] == 2
    assert stats["action"]["max"][0] == 1.0 and stats["proprio"]["std"][0] == 0.0


def test_newcombe_interval_matches_the_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert newcombe_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=5e-5)
    low, high = newcombe_interval(3, 10, 9, 10)  # antisymmetric in the two samples
    assert (low, high) == pytest.approx((-0.8090, -0.1705), abs=5e-5)
    with pytest.raises(ValueError, match="n > 0"):
        newcombe_interval(1, 0, 1, 2)


def test_wilson_interval():
    low, high = wilson_interval(45, 50)
    assert 0.78 < low < 0.79 and 0.95 < high < 0.96  # textbook values 0.786, 0.957
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_importing_the_sim_package_loads_no_simulator():
    import subprocess
    import sys

    code = (
        "import sys, robosteer, robosteer.sim, robosteer.sim.cli, robosteer.data.dataset, robosteer.data.lerobot;"
        "robosteer.sim.sample_scene('lift/base', 0);"
        "sys.exit(int('mujoco' in sys.modules or 'robosuite' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("task", ["place/distractors", "stack/distractors", "lift/relational"])
def test_distractors_never_look_like_a_named_object(task):
    for seed in range(40):
        scene = sample_scene(task, seed)
        named = {(o.color, o.shape) for o in scene.objects if o.role in ("target", "support", "reference")}
        assert all((o.color, o.shape) not in named for o in scene.objects if o.role == "distractor")


@pytest.mark.parametrize("task", ["lift/lookalikes", "place/lookalikes", "stack/lookalikes"])
def test_lookalikes_share_the_named_colour_and_only_the_shape_word_tells(task):
    for seed in range(40):
        scene = sample_scene(task, seed)
        target = next(o for o in scene.objects if o.role == "target")
        distractors = [o for o in scene.objects if o.role == "distractor"]
        assert len(distractors) == 3 and target.shape in scene.instruction
        assert all(o.color == target.color and o.shape != target.shape for o in distractors)
    with pytest.raises(ValueError, match="lookalikes needs other_shapes"):
        VisualAxis(lookalikes=True)  # cubes among cubes: nothing would tell them apart

"""The simulated Panda: seeded episodes, determinism, predicates on set poses, visible variations."""

import mujoco
import numpy as np
import pytest

from robosteer.sim.env import SimConfig, make_env
from robosteer.sim.expert import ScriptedExpert, expert_action
from robosteer.sim.scene import DIRECTIONS, PUSH_DISTANCE, sample_scene
from robosteer.sim.variations import VARIATIONS


@pytest.fixture(scope="module")
def env():
    env = make_env(SimConfig(image_size=64))
    yield env
    env.close()


def _set_pose(env, i, xyz):
    env.sim.data.set_joint_qpos(env.objects[i].joints[0], np.concatenate([xyz, [1.0, 0, 0, 0]]))
    mujoco.mj_forward(env.sim.model._model, env.sim.data._data)


def _rest(env, i):
    spec = env.scene.objects[i]
    return np.array([spec.xy[0], spec.xy[1], 0.8 + spec.half_size])


@pytest.mark.parametrize("task", ["lift/base", "place/base", "push/base", "stack/base"])
def test_each_family_runs_a_short_seeded_episode(env, task):
    obs = env.reset_task(task, 1)
    assert obs.image.shape == (64, 64, 3) and obs.image.dtype == np.uint8
    assert obs.proprio.shape == (7,) and obs.instruction == sample_scene(task, 1).instruction
    start = obs.proprio[:3].copy()
    expert = ScriptedExpert()
    expert.attach(env)
    for _ in range(6):
        action = expert(obs.image, obs.instruction, obs.proprio)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1) and action[6] in (-1.0, 1.0)
        obs = env.act(action)
    assert np.linalg.norm(obs.proprio[:3] - start) > 0.05  # the arm went somewhere
    assert not env.success()  # six steps are too few for any family


def test_same_seed_same_first_frame_and_expert_actions(env):
    def roll(seed):
        obs = env.reset_task("place/base", seed)
        frame, actions = obs.image.copy(), []
        for _ in range(5):
            action, _ = expert_action(env.scene, env.world_state())
            actions.append(action)
            env.act(action)
        return frame, np.array(actions)

    f1, a1 = roll(4)
    env.reset_task("lift/base", 9)  # something else in between
    f2, a2 = roll(4)
    f3, _ = roll(5)
    assert np.array_equal(f1, f2) and np.array_equal(a1, a2)
    assert not np.array_equal(f1, f3)


def test_images_are_upright(env):
    obs = env.reset_task("lift/base", 0)
    # the table (bright) fills the bottom of the image, the robot and background the top
    assert obs.image[-8:].mean() > obs.image[:8].mean()


def test_predicates_on_poses_set_in_the_sim(env):
    env.reset_task("lift/base", 2)
    assert not env.success()
    _set_pose(env, 0, _rest(env, 0) + [0, 0, 0.1])
    assert env.success()

    env.reset_task("place/base", 2)
    plate = env.scene.plates[0]
    _set_pose(env, 0, [plate.xy[0], plate.xy[1], 0.825])
    assert env.success()
    _set_pose(env, 0, [plate.xy[0] + 0.06, plate.xy[1], 0.825])
    assert not env.success()

    env.reset_task("push/base", 2)
    sign = DIRECTIONS[env.scene.direction]
    _set_pose(env, 0, _rest(env, 0) + [0, sign * (PUSH_DISTANCE + 0.01), 0])
    assert env.success()
    _set_pose(env, 0, _rest(env, 0) + [0, -sign * (PUSH_DISTANCE + 0.01), 0])
    assert not env.success()

    env.reset_task("stack/base", 2)
    s = env.scene.index("support")
    _set_pose(env, 0, _rest(env, s) + [0, 0, 0.05])
    assert env.success()
    _set_pose(env, 0, _rest(env, s) + [0.045, 0, 0.05])
    assert not env.success()


@pytest.mark.parametrize("name", ["novel_color", "novel_shape", "novel_form", "lookalikes", "lighting", "harsh_light", "table",
                                  "camera_shift", "camera_move"])
def test_visual_and_environment_variations_change_pixels(env, name):
    base = env.reset_scene(sample_scene("lift/base", 3)).image
    varied = env.reset_scene(sample_scene("lift/base", 3, variation=VARIATIONS[name])).image
    assert np.abs(base.astype(int) - varied.astype(int)).sum(-1).astype(bool).mean() > 0.002


def test_physical_variation_sets_mass_and_friction(env):
    env.reset_task("lift/physics", 7)
    spec = env.scene.objects[0]
    model = env.sim.model._model
    assert model.body_mass[env.object_body_ids[0]] == pytest.approx(spec.mass)
    geom = env.sim.model.geom_name2id(env.objects[0].contact_geoms[0])
    assert model.geom_friction[geom][0] == pytest.approx(spec.friction)
    assert env.world_state().object_pos[0][2] == pytest.approx(0.8 + spec.half_size, abs=2e-3)


@pytest.mark.slow
def test_expert_solves_every_task_of_the_split():
    from robosteer.sim.collect import measure_expert
    from robosteer.sim.tasks import get_split

    results = measure_expert(get_split("default").tasks, episodes=20, workers=2, progress=False)
    low = {task: r.success_rate for task, r in results.items() if r.success_rate < 0.95}
    assert not low, low


def test_action_noise_perturbs_execution_but_not_labels(env):
    from robosteer.sim.rollout import run_episode

    clean = run_episode(env, "lift/base", 0, ScriptedExpert(), horizon=6, record=True)
    noisy = run_episode(env, "lift/base", 0, ScriptedExpert(), horizon=6, record=True, action_noise=0.5)
    again = run_episode(env, "lift/base", 0, ScriptedExpert(), horizon=6, record=True, action_noise=0.5)
    assert np.array_equal(clean.proprio[0], noisy.proprio[0])
    assert not np.allclose(clean.proprio[3:], noisy.proprio[3:], atol=1e-3)  # executed actions differed
    assert np.array_equal(noisy.actions, again.actions)  # noise is seeded by the episode seed
    assert np.all(np.abs(noisy.actions) <= 1) and set(noisy.actions[:, 6]) <= {-1.0, 1.0}


def test_start_jitter_moves_the_first_recorded_pose_and_the_expert_still_succeeds(env):
    from robosteer.sim.rollout import run_episode

    plain = run_episode(env, "lift/base", 0, ScriptedExpert(), record=True)
    moved = run_episode(env, "lift/base", 0, ScriptedExpert(), record=True, start_jitter=0.1)
    again = run_episode(env, "lift/base", 0, ScriptedExpert(), record=True, start_jitter=0.1)
    other = run_episode(env, "lift/base", 1, ScriptedExpert(), horizon=1, record=True, start_jitter=0.1)
    shift = moved.proprio[0, :3] - plain.proprio[0, :3]
    assert np.linalg.norm(shift[:2]) > 0.01 and np.all(np.abs(shift) <= [0.11, 0.11, 0.06])  # within the jitter box
    assert np.array_equal(moved.proprio, again.proprio)  # seeded by the episode seed
    assert not np.allclose(other.proprio[0, :3] - plain.proprio[0, :3], shift, atol=1e-3)  # another seed, another offset
    assert plain.success and moved.success and moved.length == len(moved.actions)  # the move is not recorded


def test_the_simulator_runs_the_policy_factory_it_is_given(tmp_path):
    """measure_policy takes a picklable zero-argument factory (called once per worker), never a policy name;
    the application turns names into policies (load_policy) and factories (PolicyFactory), and policy files
    keep their format."""
    import json
    import pickle

    from robosteer.app.policy import PolicyFactory, load_policy, write_policy_file
    from robosteer.sim.collect import measure_policy

    with pytest.raises(ValueError, match="policy_factory must be a picklable zero-argument callable"):
        measure_policy("expert", ["lift/base"], episodes=1)
    made = []

    class Counting(ScriptedExpert):
        def __init__(self):
            super().__init__()
            made.append(self)

    results = measure_policy(Counting, ["lift/base", "push/base"], episodes=2, config=SimConfig(render=False),
                             progress=False)
    assert len(made) == 1 and [r.n for r in results.values()] == [2, 2]
    factory = pickle.loads(pickle.dumps(PolicyFactory("expert")))
    assert factory == PolicyFactory("expert") and factory.name == "expert"
    assert isinstance(factory(), ScriptedExpert) and isinstance(load_policy("expert"), ScriptedExpert)
    expert = measure_policy(ScriptedExpert, ["lift/base"], episodes=2, config=SimConfig(render=False), progress=False)
    by_name = measure_policy(factory, ["lift/base"], episodes=2, config=SimConfig(render=False), progress=False)
    assert [e.__dict__ for e in expert["lift/base"].episodes] == [e.__dict__ for e in by_name["lift/base"].episodes]
    spec = json.loads(write_policy_file(tmp_path / "policy.json", base="default").read_text())
    assert spec == {"format": "robosteer.policy", "base": "default", "adapter": None}  # the file format of 3fd4d93


@pytest.mark.parametrize("task", ["lift/base", "place/base", "push/base"])
def test_a_counterfactual_scene_is_the_same_scene_with_the_other_cube_named(env, task):
    """Same objects, poses, light, camera and start; the target and a same-shaped distractor exchange roles,
    the instruction names the other colour, and the expert (reading roles) moves the other cube and succeeds."""
    from robosteer.sim.rollout import run_episode
    from robosteer.sim.scene import counterfactual_scene

    scene = sample_scene(task, 4)
    other = counterfactual_scene(scene)
    target, named = scene.object("target"), other.object("target")
    assert named.color != target.color and named.xy == scene.object("distractor").xy
    assert other.object("distractor").xy == target.xy and other.objects[0] is named  # the target stays first
    assert other.instruction == scene.instruction.replace(target.color, named.color) != scene.instruction
    assert sorted((o.xy, o.color) for o in other.objects) == sorted((o.xy, o.color) for o in scene.objects)
    assert np.array_equal(env.reset_scene(scene).image, env.reset_scene(other).image)  # the same first image
    plain = run_episode(env, task, 4, ScriptedExpert(), record=True, start_jitter=0.1)
    swapped = run_episode(env, task, 4, ScriptedExpert(), record=True, start_jitter=0.1, counterfactual=True)
    assert plain.success and swapped.success and swapped.instruction == other.instruction
    assert np.array_equal(plain.proprio[0], swapped.proprio[0])  # same jittered start
    assert not np.allclose(plain.states[0], swapped.states[0])  # the privileged target is the other cube
    assert np.abs(plain.actions[:10] - swapped.actions[:10]).max() > 0.2  # and the expert heads elsewhere


def test_a_scene_without_a_twin_shaped_distractor_has_no_counterfactual():
    from dataclasses import replace

    from robosteer.sim.scene import counterfactual_scene

    scene = sample_scene("lift/base", 0)
    lone = replace(scene, objects=tuple(o for o in scene.objects if o.role != "distractor"))
    with pytest.raises(ValueError, match="no distractor shaped like the target"):
        counterfactual_scene(lone)
    with pytest.raises(ValueError, match="exactly once"):
        counterfactual_scene(replace(scene, instruction="lift it"))


def test_a_counterfactual_collection_records_the_same_seeds_with_the_other_cube_named(tmp_path):
    import json

    from robosteer.data.dataset import DemoDataset
    from robosteer.sim.collect import CollectConfig, collect

    collect(CollectConfig(tasks=("lift/base",), episodes=1), tmp_path / "plain")
    collect(CollectConfig(tasks=("lift/base",), episodes=1, counterfactual=True), tmp_path / "swapped")
    plain, swapped = DemoDataset(tmp_path / "plain"), DemoDataset(tmp_path / "swapped")
    assert json.loads((tmp_path / "swapped" / "meta.json").read_text())["collect_config"]["counterfactual"] is True
    assert np.array_equal(plain[0].image, swapped[0].image)
    assert plain[0].instruction != swapped[0].instruction == counterfactual_instruction("lift/base", 0)


def counterfactual_instruction(task, seed):
    from robosteer.sim.scene import counterfactual_scene

    return counterfactual_scene(sample_scene(task, seed)).instruction

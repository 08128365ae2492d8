"""The tabletop environment: a Panda, a table and the objects of one task instance.

:class:`SteerEnv` is a robosuite ``ManipulationEnv`` that hosts every task family. It
is reset to a :class:`~robosteer.sim.scene.SceneSpec` (``reset_task("lift/base", 7)``
samples one). The compiled model depends only on the scene's *layout* (object shapes
and sizes, number of plates); colours, masses, friction, positions, light, table look
and camera pose are written into the model at reset, so consecutive episodes with the
same layout reuse one model and one render context.

Actions are 7-D in OSC_POSE's normalised space [-1, 1]: end-effector position deltas
(x, y, z; 1.0 = 5 cm goal offset), rotation deltas (axis-angle; 1.0 = 0.5 rad) and the
gripper (-1 open, +1 close). The proprio vector is documented at ``robosteer.data.schema.PROPRIO_NAMES``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .backend import load_robosuite
from .cameras import MAIN_VIEW, MUJOCO_CAMERAS, SINGLE_VIEW, WRIST_CAMERA, check_cameras
from .predicates import TABLE_TOP_Z, WorldState, is_success
from .render import Renderer
from .scene import CAMERA_FOVY, SceneSpec, sample_scene
from .tasks import Task
from .variations import COLORS, LIGHTS, TABLES

# This module is the simulator proper: importing it imports robosuite and mujoco, set up for headless
# rendering first (``import robosteer.sim`` stays cheap: its names load on first use).
load_robosuite()
import mujoco  # noqa: E402
from robosuite.controllers import load_composite_controller_config  # noqa: E402
from robosuite.environments.manipulation.manipulation_env import ManipulationEnv  # noqa: E402
from robosuite.models.arenas import TableArena  # noqa: E402
from robosuite.models.objects import BallObject, BoxObject, CylinderObject  # noqa: E402
from robosuite.models.tasks import ManipulationTask  # noqa: E402
from robosuite.utils.mjcf_utils import new_element, xml_path_completion  # noqa: E402

log = logging.getLogger(__name__)

# Orientation of the Panda's grip site at robosuite's home joint angles (fingers down, tilted
# 7.3 degrees about world y), measured in MuJoCo; proprio rotations are relative to it.
_TILT = np.deg2rad(7.29)
HOME_EEF_ROT = np.array([[0.0, np.cos(_TILT), np.sin(_TILT)], [1.0, 0.0, 0.0], [0.0, np.sin(_TILT), -np.cos(_TILT)]])


@dataclass(frozen=True)
class SimConfig:
    """How the simulation runs and what it shows the policy.

    ``cameras`` names the views rendered at every step, in a fixed order: ``("agentview",)`` (the
    default) or ``("agentview", "wrist")``. The first is ``Observation.image`` (rendered from the
    MuJoCo camera ``camera``); ``"wrist"`` is the Panda's eye-in-hand camera (``cameras.py``).
    ``wrist_camera=True`` is the same as adding ``"wrist"`` (the two fields are kept consistent).
    """

    image_size: int = 64  # square RGB image side in pixels
    camera: str = "agentview"  # MuJoCo camera behind the main view (Observation.image)
    wrist_camera: bool = False  # also render robot0_eye_in_hand into Observation.wrist_image (= "wrist" in cameras)
    render: bool = True  # False skips all rendering (scripted-expert benchmarks)
    control_freq: int = 10  # control steps per simulated second
    cameras: tuple[str, ...] = SINGLE_VIEW  # views rendered at every step, main view first (see cameras.py)

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {self.image_size}")
        if self.control_freq not in (5, 10, 20):
            raise ValueError(f"control_freq must be 5, 10 or 20, got {self.control_freq}")
        cameras = check_cameras(self.cameras, "SimConfig.cameras")
        if self.wrist_camera and "wrist" not in cameras:
            cameras += ("wrist",)
        object.__setattr__(self, "cameras", cameras)
        object.__setattr__(self, "wrist_camera", "wrist" in cameras)


@dataclass
class Observation:
    """What a policy sees at one step.

    With several cameras, ``views`` holds every view by name in ``SimConfig.cameras`` order (its first
    entry is ``image``); with one camera it is empty. ``images`` is the tuple of views either way.
    """

    image: np.ndarray | None  # (H, W, 3) uint8, upright; None when rendering is off
    proprio: np.ndarray  # (7,) float32, see robosteer.data.schema.PROPRIO_NAMES
    instruction: str
    wrist_image: np.ndarray | None = None
    views: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def images(self) -> tuple[np.ndarray, ...]:
        """Every view in camera order: ``(image,)`` with one camera, ``(agentview, wrist)`` with two."""
        return tuple(self.views.values()) if self.views else (self.image,)

    def side_by_side(self) -> np.ndarray | None:
        """The views next to each other, (H, W * n_views, 3) (the main image itself with one camera)."""
        if not self.views or self.image is None:
            return self.image
        return np.concatenate(list(self.views.values()), axis=1)


def _look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MuJoCo camera quaternion (w, x, y, z) looking from ``pos`` at ``target``, z up."""
    forward = target - pos
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    up = np.cross(right, forward)
    rot = np.stack([right, up, -forward], axis=1)  # camera x, y, z axes as columns
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, rot.flatten())
    return quat


def _rotvec(rot: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix."""
    angle = np.arccos(np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    return axis / (2 * np.sin(angle)) * angle


class _FixedNoise:
    """Stands in for robosuite's generator so the arm starts at the scene's own joint noise."""

    def __init__(self, noise) -> None:
        self.noise = np.asarray(noise, dtype=float)

    def uniform(self, low, high, size):
        return self.noise[:size]


class SteerEnv(ManipulationEnv):
    """One env for every task family; see the module docstring."""

    def __init__(self, config: SimConfig = SimConfig()):
        self.config = config
        self.scene: SceneSpec = sample_scene("lift/base", 0)
        self._layout = None
        self._renderer = None
        self._start_xy: np.ndarray | None = None
        controller = load_composite_controller_config(robot="Panda")
        super().__init__(
            robots="Panda",
            controller_configs=controller,
            initialization_noise={"magnitude": 1.0, "type": "uniform"},
            use_camera_obs=False,
            has_renderer=False,
            has_offscreen_renderer=False,
            control_freq=config.control_freq,
            horizon=10_000,
            ignore_done=True,
            hard_reset=False,
            renderer="mujoco",
        )

    # ---- model building (once per layout) -------------------------------------------
    def _load_model(self):
        super()._load_model()
        robot = self.robots[0].robot_model
        robot.set_base_xpos(robot.base_xpos_offset["table"](0.8))
        # MuJoCo uses the larger friction of two touching geoms: a low table friction lets
        # each object's own friction (a variation parameter) decide how it slides.
        arena = TableArena(table_full_size=(0.8, 0.8, 0.05), table_friction=(0.3, 0.005, 0.0001), table_offset=(0, 0, TABLE_TOP_Z))
        arena.set_origin([0, 0, 0])
        arena.asset.append(
            new_element("texture", name="steer-wood", type="2d", file=xml_path_completion("textures/dark-wood.png"))
        )
        arena.asset.append(new_element("material", name="steer_wood", texture="steer-wood", texrepeat="2 2"))
        arena.set_camera("agentview", pos=[0.5, 0, 1.35], quat=[1, 0, 0, 0], camera_attribs={"fovy": str(CAMERA_FOVY)})
        self.objects = []
        for spec in self.scene.objects:
            h = spec.half_size
            kwargs = dict(name=spec.name, rgba=spec.rgba, friction=(spec.friction, 0.005, 0.0001))
            if spec.shape == "cube":
                obj = BoxObject(size=[h, h, h], **kwargs)
            elif spec.shape == "cylinder":
                obj = CylinderObject(size=[h, h], **kwargs)
            else:
                obj = BallObject(size=[h], **kwargs)
            self.objects.append(obj)
        self.plates = [
            CylinderObject(name=f"plate{i}", size=[p.radius, 0.001], rgba=(1, 1, 1, 1), obj_type="visual", joints=None)
            for i, p in enumerate(self.scene.plates)
        ]
        self.model = ManipulationTask(
            mujoco_arena=arena,
            mujoco_robots=[r.robot_model for r in self.robots],
            mujoco_objects=self.objects + self.plates,
        )
        self._layout = self.scene.layout

    def _initialize_sim(self, xml_string=None):
        super()._initialize_sim(xml_string)
        model = self.sim.model._model
        self._body_mass0 = model.body_mass.copy()
        self._body_inertia0 = model.body_inertia.copy()
        if self._renderer is not None:
            self._renderer.close()
        self._renderer = Renderer(model) if self.config.render else None

    def _setup_references(self):
        super()._setup_references()
        m = self.sim.model
        self.object_body_ids = [m.body_name2id(o.root_body) for o in self.objects]
        self.plate_body_ids = [m.body_name2id(p.root_body) for p in self.plates]
        self.table_geom_id = m.geom_name2id("table_visual")
        self.camera_id = m.camera_name2id("agentview")

    # ---- reset (every episode) ---------------------------------------------------
    def reset_task(self, task: "Task | str", seed: int) -> Observation:
        """``env.reset_task("place/base", 3)``: sample the scene for this seed and reset to it."""
        return self.reset_scene(sample_scene(task, seed))

    def reset_scene(self, scene: SceneSpec) -> Observation:
        """Reset to a given scene; rebuilds the model only when its layout changed."""
        self.scene = scene
        self.hard_reset = scene.layout != self._layout
        if self.hard_reset:
            log.debug("building a model for layout %s", scene.layout)
            self._destroy_sim()
        self.reset()
        self.hard_reset = False
        return self.observe()

    def _reset_internal(self):
        saved_rng, self.rng = self.rng, _FixedNoise(self.scene.joint_noise)
        try:
            super()._reset_internal()
        finally:
            self.rng = saved_rng
        model, data = self.sim.model._model, self.sim.data._data
        for spec, obj, body in zip(self.scene.objects, self.objects, self.object_body_ids):
            pos = [spec.xy[0], spec.xy[1], TABLE_TOP_Z + spec.half_size]
            self.sim.data.set_joint_qpos(obj.joints[0], np.concatenate([pos, [1.0, 0.0, 0.0, 0.0]]))
            scale = spec.mass / self._body_mass0[body]
            model.body_mass[body] = spec.mass
            model.body_inertia[body] = self._body_inertia0[body] * scale
            for geom in obj.visual_geoms:
                model.geom_rgba[self.sim.model.geom_name2id(geom)] = spec.rgba
            for geom in obj.contact_geoms:
                model.geom_friction[self.sim.model.geom_name2id(geom)][0] = spec.friction
        for spec, plate, body in zip(self.scene.plates, self.plates, self.plate_body_ids):
            model.body_pos[body] = [spec.xy[0], spec.xy[1], TABLE_TOP_Z + 0.001]
            for geom in plate.visual_geoms:
                model.geom_rgba[self.sim.model.geom_name2id(geom)] = COLORS[spec.color]
        diffuse, direction, ambient = LIGHTS[self.scene.light]
        model.light_diffuse[:] = diffuse
        model.light_dir[:] = np.asarray(direction) / np.linalg.norm(direction)
        model.vis.headlight.ambient[:] = ambient
        material, rgba = TABLES[self.scene.table]
        names = {"ceramic": "table_ceramic", "wood": "steer_wood"}
        model.geom_matid[self.table_geom_id] = (
            mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MATERIAL, names[material]) if material in names else -1
        )
        model.geom_rgba[self.table_geom_id] = rgba
        cam_pos, cam_target = np.asarray(self.scene.camera_pos), np.asarray(self.scene.camera_target)
        model.cam_pos[self.camera_id] = cam_pos
        model.cam_quat[self.camera_id] = _look_at_quat(cam_pos, cam_target)
        mujoco.mj_forward(model, data)
        self._start_xy = np.array([s.xy for s in self.scene.objects])

    # ---- stepping and observing -----------------------------------------------------
    def act(self, action) -> Observation:
        """Apply one 7-D action (clipped to [-1, 1]) for one control step."""
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(7), -1.0, 1.0)
        self.step(action)
        return self.observe()

    def reward(self, action=None) -> float:
        return float(self.success())

    def _check_success(self) -> bool:
        return self.success()

    def success(self) -> bool:
        """Whether the current state satisfies the task's success predicate."""
        return is_success(self.scene, self.world_state())

    def world_state(self) -> WorldState:
        """Privileged state: object poses, end-effector, gripper and grasp contacts."""
        data = self.sim.data
        gripper = self.robots[0].gripper["right"]
        return WorldState(
            object_pos=np.array([data.body_xpos[b] for b in self.object_body_ids]),
            start_xy=self._start_xy.copy(),
            eef_pos=self._eef_pos(),
            eef_rotvec=self._eef_rotvec(),
            gripper_width=self._gripper_width(),
            grasped=tuple(self._check_grasp(gripper=gripper, object_geoms=o) for o in self.objects),
        )

    def _eef_rotvec(self) -> np.ndarray:
        rot = self.sim.data.site_xmat[self.robots[0].eef_site_id["right"]].reshape(3, 3)
        return _rotvec(rot @ HOME_EEF_ROT.T)

    def _eef_pos(self) -> np.ndarray:
        return np.array(self.sim.data.site_xpos[self.robots[0].eef_site_id["right"]])

    def _gripper_width(self) -> float:
        q = self.sim.data.qpos[self.robots[0]._ref_gripper_joint_pos_indexes["right"]]
        return float(q[0] - q[1])

    def proprio(self) -> np.ndarray:
        """(7,) float32: eef xyz, eef rotation from home (world-frame axis-angle), gripper width."""
        return np.concatenate([self._eef_pos(), self._eef_rotvec(), [self._gripper_width()]]).astype(np.float32)

    def render_image(self, camera: str | None = None) -> np.ndarray:
        """Current RGB image of a camera (default: the policy camera), uint8 HWC, upright."""
        if self._renderer is None:
            raise ValueError("this env was made with SimConfig(render=False)")
        size = self.config.image_size
        return self._renderer.render(self.sim.data._data, camera or self.config.camera, size, size)

    def view_camera(self, view: str) -> str:
        """The MuJoCo camera behind a view name of ``SimConfig.cameras``."""
        return self.config.camera if view == MAIN_VIEW else MUJOCO_CAMERAS[view]

    def observe(self) -> Observation:
        render = self.config.render
        image = self.render_image() if render else None
        wrist = self.render_image(WRIST_CAMERA) if render and self.config.wrist_camera else None
        views = {}
        if render and len(self.config.cameras) > 1:
            rendered = {MAIN_VIEW: image, "wrist": wrist}
            views = {name: rendered[name] for name in self.config.cameras}
        return Observation(image=image, proprio=self.proprio(), instruction=self.scene.instruction,
                           wrist_image=wrist, views=views)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()


def make_env(config: SimConfig | None = None) -> SteerEnv:
    """``env = make_env(SimConfig(image_size=64)); obs = env.reset_task("lift/base", 0)``."""
    return SteerEnv(config or SimConfig())

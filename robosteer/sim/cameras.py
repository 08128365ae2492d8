"""The camera views the simulator renders, by name (standard library only, so configs import it cheaply).

``"agentview"`` is the main view (``Observation.image``, ``Frame.image``, a demo folder's ``images/``),
rendered from the re-posed robosuite camera of that name; ``"wrist"`` is the Panda's eye-in-hand
camera ``robot0_eye_in_hand`` (on the hand, fovy 75 degrees, looking along the fingers: the
fingertips at the bottom of the image, the table and objects beyond them). A list of views always
starts with the main view, so everything single-camera code reads stays the agentview.

A policy that takes ``n_views`` images per observation is run with ``cameras_for_views(n_views)``
when no cameras are named (OpenVLA-OFT's order: the third-person view, then the wrist). The simulator
never reads a policy's ``n_views``: the layer that loads policies does, and hands over the cameras (or
gives its policies a ``cameras`` attribute, which ``own_cameras`` reads).

Usage::

    check_cameras(("agentview", "wrist"), "SimConfig.cameras")   # -> ("agentview", "wrist")
    MUJOCO_CAMERAS["wrist"]                                        # -> "robot0_eye_in_hand"
    cameras_for_views(2)                                           # -> ("agentview", "wrist")
"""

from __future__ import annotations

MAIN_VIEW = "agentview"
WRIST_CAMERA = "robot0_eye_in_hand"  # robosuite 1.5's name of the Panda's eye-in-hand camera
MUJOCO_CAMERAS = {MAIN_VIEW: "agentview", "wrist": WRIST_CAMERA}  # view -> MuJoCo camera (main: SimConfig.camera)
VIEWS = tuple(MUJOCO_CAMERAS)
SINGLE_VIEW = (MAIN_VIEW,)  # the default: one camera, the layout of every folder written before views existed


def check_cameras(cameras, where: str = "cameras") -> tuple[str, ...]:
    """The view names as a tuple, or a ValueError naming ``where`` and what was expected."""
    if isinstance(cameras, str):
        cameras = (cameras,)
    cameras = tuple(str(c) for c in cameras)
    if not cameras or cameras[0] != MAIN_VIEW:
        raise ValueError(f"{where} must start with {MAIN_VIEW!r} (the main view, Observation.image), got {cameras!r}")
    unknown = [c for c in cameras if c not in VIEWS]
    if unknown or len(set(cameras)) != len(cameras):
        raise ValueError(f"{where} must be distinct views out of {VIEWS}, got {cameras!r}")
    return cameras


def cameras_for_views(n_views: int) -> tuple[str, ...]:
    """``cameras_for_views(2)`` -> ``("agentview", "wrist")``: the views a policy taking ``n_views`` images is shown
    when no cameras are named (1: the agentview alone); a ValueError for a count the simulator has no default for."""
    if isinstance(n_views, bool) or not isinstance(n_views, int) or not 1 <= n_views <= len(VIEWS):
        raise ValueError(f"the policy takes {n_views!r} camera view(s); the simulator's default views cover 1 "
                         f"({MAIN_VIEW}) or {len(VIEWS)} ({','.join(VIEWS)}): pass the cameras explicitly "
                         f"(--cameras, SimConfig.cameras)")
    return VIEWS[:n_views]


def views_for(n_views: int, cameras=None) -> tuple[str, ...]:
    """``views_for(2)`` -> ``("agentview", "wrist")``: the views to show a policy taking ``n_views`` images:
    ``cameras`` when named (checked, and a ValueError unless there are ``n_views`` of them), else
    ``cameras_for_views(n_views)``."""
    if not cameras:
        return cameras_for_views(n_views)
    cameras = check_cameras(cameras, "cameras")
    if len(cameras) != n_views:
        raise ValueError(f"--cameras gives {len(cameras)} view(s) ({','.join(cameras)}); this policy takes {n_views} "
                         f"(its n_views): name that many cameras, or leave --cameras out for the policy's own views")
    return cameras


def own_cameras(policy) -> tuple[str, ...]:
    """``own_cameras(policy)``: the views a policy (or policy factory) says it takes in its ``cameras`` attribute
    (the application's ``VLAPolicy`` and ``PolicyFactory`` have one), else the agentview alone; what ``evaluate``
    and ``measure_policy`` render when they are given no ``SimConfig``."""
    cameras = getattr(policy, "cameras", None)
    return check_cameras(cameras, "policy.cameras") if cameras else SINGLE_VIEW

"""The camera views the simulator renders, by name (standard library only, so configs import it cheaply).

``"agentview"`` is the main view (``Observation.image``, ``Frame.image``, a demo folder's ``images/``),
rendered from the re-posed robosuite camera of that name; ``"wrist"`` is the Panda's eye-in-hand
camera ``robot0_eye_in_hand`` (on the hand, fovy 75 degrees, looking along the fingers: the
fingertips at the bottom of the image, the table and objects beyond them). A list of views always
starts with the main view, so everything single-camera code reads stays the agentview.

Usage::

    check_cameras(("agentview", "wrist"), "SimConfig.cameras")   # -> ("agentview", "wrist")
    MUJOCO_CAMERAS["wrist"]                                        # -> "robot0_eye_in_hand"
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

"""Fast offscreen RGB rendering of a MuJoCo model on the CPU (EGL + Mesa).

robosuite creates a new OpenGL context, and uploads every texture again, whenever it
rebuilds a simulation. Here one GL context lives for the whole process and only the
MuJoCo render context is rebuilt when the model changes. Multisampling, shadows and
reflections are off: on a software rasteriser they cost more than they show at
64-128 px. Images come out upright (row 0 at the top), uint8 HWC.
"""

from __future__ import annotations

import atexit
import os

import numpy as np

from .backend import load_robosuite

_GL_CONTEXT = None  # one per process; workers of a pool each make their own
MAX_SIZE = 512  # largest image side the offscreen buffer is allocated for


def _gl_context():
    global _GL_CONTEXT
    if _GL_CONTEXT is None:
        load_robosuite()  # sets MUJOCO_GL before mujoco picks a backend
        import mujoco

        _GL_CONTEXT = mujoco.GLContext(MAX_SIZE, MAX_SIZE)
        atexit.register(_free_gl_context)
    _GL_CONTEXT.make_current()
    return _GL_CONTEXT


def _free_gl_context() -> None:
    """Free the context while the interpreter is whole: mujoco's own ``__del__`` at shutdown finds EGL gone."""
    global _GL_CONTEXT
    if _GL_CONTEXT is not None:
        try:
            _GL_CONTEXT.free()
        finally:
            _GL_CONTEXT = None


class Renderer:
    """``Renderer(model).render(data, "agentview", 64, 64)`` -> (64, 64, 3) uint8, upright."""

    def __init__(self, model) -> None:
        import mujoco

        self._mujoco = mujoco
        _gl_context()
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, MAX_SIZE)
        model.vis.global_.offheight = max(model.vis.global_.offheight, MAX_SIZE)
        self.model = model
        self.scene = mujoco.MjvScene(model, maxgeom=2000)
        self.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        try:
            self.context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        except mujoco.FatalError as err:
            raise RuntimeError(
                f"offscreen OpenGL is not available ({err}); with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}. "
                "Install libegl1 libegl-mesa0 libgl1-mesa-dri and set MUJOCO_GL=egl before mujoco is imported"
            ) from None
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        self.option = mujoco.MjvOption()
        self.option.geomgroup[0] = 0  # collision geoms hidden, visual geoms (group 1) shown
        self.perturb = mujoco.MjvPerturb()
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FIXED

    def camera_id(self, name: str) -> int:
        cam = self._mujoco.mj_name2id(self.model, self._mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam < 0:
            names = [self.model.camera(i).name for i in range(self.model.ncam)]
            raise ValueError(f"unknown camera {name!r}; this model has {names}")
        return cam

    def render(self, data, camera: str, height: int, width: int) -> np.ndarray:
        """Render ``camera`` at ``height`` x ``width``; returns uint8 (H, W, 3), upright."""
        mj = self._mujoco
        _gl_context()
        self.camera.fixedcamid = self.camera_id(camera)
        mj.mjv_updateScene(self.model, data, self.option, self.perturb, self.camera, mj.mjtCatBit.mjCAT_ALL, self.scene)
        viewport = mj.MjrRect(0, 0, width, height)
        mj.mjr_render(viewport, self.scene, self.context)
        rgb = np.empty((height, width, 3), dtype=np.uint8)
        mj.mjr_readPixels(rgb, None, viewport, self.context)
        return np.ascontiguousarray(rgb[::-1])  # OpenGL rows start at the bottom

    def close(self) -> None:
        self.context.free()

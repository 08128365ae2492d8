"""Loading the simulator: robosuite and MuJoCo, set up for headless CPU rendering.

Every module of ``robosteer.sim`` that needs robosuite or mujoco gets them through
:func:`load_robosuite`, so that ``import robosteer`` (and ``import robosteer.sim``)
stays free of both, and so that the offscreen-rendering environment variables are
set once, before the first import of mujoco, and only when the simulator is used.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

# robosuite logs through its own logger, with a console handler it adds at import time.
_ROBOSUITE_LOGGER = "robosuite_logs"
# Import-time notices that say nothing about this project's use of robosuite: a missing
# private macro file, the optional robosuite_models package, the mink-based IK of GR1.
_QUIET_PHRASES = ("private macro file", "setup_macros.py", "robosuite_models", "mink")


def _worth_showing(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(phrase in message for phrase in _QUIET_PHRASES)


def load_robosuite():
    """``robosuite = load_robosuite()``: import robosuite for headless EGL rendering.

    Sets ``MUJOCO_GL=egl`` and ``PYOPENGL_PLATFORM=egl`` unless the user chose
    otherwise, and filters robosuite's import-time notices about optional extras.
    """
    if "robosuite" not in sys.modules:
        if "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ:
            log.warning(
                "mujoco was imported before robosteer.sim could select headless EGL rendering; "
                "set MUJOCO_GL=egl before importing mujoco, or rendering may fail"
            )
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
        logger = logging.getLogger(_ROBOSUITE_LOGGER)
        if _worth_showing not in logger.filters:
            logger.addFilter(_worth_showing)
        log.debug("importing robosuite with MUJOCO_GL=%s", os.environ["MUJOCO_GL"])
    import robosuite

    # robosuite's console handler logs every controller-config load at INFO
    logging.getLogger(_ROBOSUITE_LOGGER).setLevel(logging.WARNING)
    return robosuite

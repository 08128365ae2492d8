"""The names of the vectors in a Franka demonstration: actions, proprio and privileged state.

The simulator writes these vectors and every data reader checks them; both take the names from here.
"""

from __future__ import annotations

ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
# eef position (world, m); eef rotation away from the home orientation, as a world-frame
# axis-angle vector (rad; ~0 when the gripper points down as at the start); gripper opening
# (distance between the fingers, m; 0.078 fully open).
PROPRIO_NAMES: tuple[str, ...] = ("eef_x", "eef_y", "eef_z", "eef_rx", "eef_ry", "eef_rz", "gripper_width")
# privileged target/goal positions, recorded for auxiliary training targets only (a policy never receives them)
STATE_NAMES: tuple[str, ...] = ("target_x", "target_y", "target_z", "goal_x", "goal_y", "goal_z")

"""Re-record tests/data/default_policy_{observation.npz,tokens.json} after the shipped policy changes.

    MUJOCO_GL=egl PYOPENGL_PLATFORM=egl .venv/bin/python scripts/record_default_policy_tokens.py

The observation is the first frame of lift/base at the first evaluation seed (never used in
training); the tokens are what the shipped default policy predicts for it (float32, greedy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> None:
    import robosteer
    from robosteer.files import atomic_write_bytes, atomic_write_text
    from robosteer.sim.env import SimConfig, make_env
    from robosteer.sim.tasks import EVAL_SEED

    env = make_env(SimConfig(image_size=64))
    obs = env.reset_task("lift/base", EVAL_SEED)
    env.close()
    vla = robosteer.load_vla("default", dtype=torch.float32)
    action, tokens = vla.predict_action(obs.image, obs.instruction, proprio=obs.proprio, return_tokens=True)
    import io

    buf = io.BytesIO()
    np.savez(buf, image=obs.image, proprio=obs.proprio.astype(np.float32), instruction=np.str_(obs.instruction))
    atomic_write_bytes(DATA / "default_policy_observation.npz", buf.getvalue())
    atomic_write_text(DATA / "default_policy_tokens.json", json.dumps(
        {"tokens": tokens.tolist(), "action": np.asarray(action, dtype=float).tolist(), "instruction": obs.instruction},
        indent=1))
    print(obs.instruction, tokens.tolist())


if __name__ == "__main__":
    main()

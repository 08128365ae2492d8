"""Re-record tests/data/default_policy_{observation.npz,tokens.json} after the shipped policy changes.

    MUJOCO_GL=egl PYOPENGL_PLATFORM=egl .venv/bin/python scripts/record_default_policy_tokens.py

The observation is the first frame of lift/base at the first evaluation seed (never used in
training), rendered with the policy's own cameras (``images``: (V, H, W, 3), the agentview
first); ``image`` is the agentview alone. The record holds what the shipped default policy
predicts for it in float32: the action (a chunk of one continuous action for the regression
head), and the greedy tokens for a token policy.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> None:
    import robosteer
    from robosteer.files import atomic_write_bytes, atomic_write_text
    from robosteer.sim.cameras import views_for
    from robosteer.sim.env import SimConfig, make_env
    from robosteer.sim.tasks import EVAL_SEED

    vla = robosteer.load_vla("default", dtype=torch.float32)
    cameras = views_for(vla.config.n_views)
    env = make_env(SimConfig(image_size=64, cameras=cameras))
    obs = env.reset_task("lift/base", EVAL_SEED)
    env.close()
    images = np.stack(obs.images)
    record = {"instruction": obs.instruction, "cameras": list(cameras)}
    if vla.config.parallel_decoding:
        action = vla.predict_action(images if len(images) > 1 else images[0], obs.instruction, proprio=obs.proprio)
    else:
        action, tokens = vla.predict_action(images[0], obs.instruction, proprio=obs.proprio, return_tokens=True)
        record["tokens"] = tokens.tolist()
    record["action"] = np.asarray(action, dtype=float).tolist()
    buf = io.BytesIO()
    np.savez(buf, image=obs.image, images=images, proprio=obs.proprio.astype(np.float32),
             instruction=np.str_(obs.instruction))
    atomic_write_bytes(DATA / "default_policy_observation.npz", buf.getvalue())
    atomic_write_text(DATA / "default_policy_tokens.json", json.dumps(record, indent=1))
    print(obs.instruction, record.get("tokens"), np.round(record["action"], 4).tolist())


if __name__ == "__main__":
    main()

"""Does the policy read the instruction's colour? Its first action with the target named, and with the distractor named.

    MUJOCO_GL=egl PYOPENGL_PLATFORM=egl .venv/bin/python scripts/instruction_grounding.py \
        --policy candidates/openvla-tiny-franka-v3b --cameras agentview,wrist --scenes 20 --out grounding.json

For each validation scene (seeds 3,000,000 +, never trained on) of lift/place/push base, the policy sees the
first observation twice: with the scene's instruction, and with the same instruction naming the distractor
cube instead (``robosteer.sim.scene.counterfactual_scene``: the images are identical). A policy that grounds
the colour moves towards the named cube in both cases. Printed per task:

- ``toward named``: how often the first action's xy direction is closer (by angle) to the named cube than to
  the other one, over both instructions (0.5 = chance, what a policy that ignores the colour gets on average);
- ``|da|``: the mean largest change of the first action's xyz between the two instructions (0 = ignores it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TASKS = ("lift/base", "place/base", "push/base")


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9), -1.0, 1.0)))


def measure(policy_path: str, cameras: tuple[str, ...], scenes: int, seed: int, tasks=TASKS) -> dict:
    import torch

    import robosteer
    from robosteer.sim.env import SimConfig, make_env
    from robosteer.sim.scene import counterfactual_scene, sample_scene

    vla = robosteer.load_vla(policy_path).eval()
    env = make_env(SimConfig(cameras=cameras))
    out = {}
    try:
        for task in tasks:
            toward, change = [], []
            for s in range(seed, seed + scenes):
                scene = sample_scene(task, s)
                first = []
                for version in (scene, counterfactual_scene(scene)):
                    obs = env.reset_scene(version)
                    image = obs.images if len(cameras) > 1 else obs.image
                    proprio = obs.proprio if vla.config.proprio_dim else None
                    with torch.no_grad():
                        action = np.asarray(vla.predict_action(image, version.instruction, proprio=proprio),
                                            dtype=float).reshape(-1, 7)[0]
                    eef = np.asarray(env.world_state().eef_pos)[:2]
                    named = np.asarray(version.object("target").xy) - eef
                    other = np.asarray(version.object("distractor").xy) - eef
                    toward.append(_angle(action[:2], named) < _angle(action[:2], other))
                    first.append(action)
                change.append(float(np.abs(first[0][:3] - first[1][:3]).max()))
            out[task] = {"toward_named": float(np.mean(toward)), "mean_abs_change": float(np.mean(change)),
                         "scenes": scenes, "first_seed": seed}
            print(f"{task:12s} toward named {out[task]['toward_named']:.2f}   |da| {out[task]['mean_abs_change']:.3f}",
                  flush=True)
    finally:
        env.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="policy folder")
    p.add_argument("--cameras", default="agentview", help="views the policy reads, comma-separated")
    p.add_argument("--scenes", type=int, default=20, help="validation scenes per task")
    p.add_argument("--seed", type=int, default=3_000_000, help="first scene seed (default: the validation seeds)")
    p.add_argument("--out", default=None, help="JSON file for the figures")
    args = p.parse_args()
    result = {"policy": args.policy, "tasks": measure(args.policy, tuple(args.cameras.split(",")), args.scenes, args.seed)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

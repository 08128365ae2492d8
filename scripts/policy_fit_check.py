"""Does a policy fit its own demonstrations, and does the simulator show it what the demos recorded?

Replays one recorded episode's expert actions in the simulator and prints, per action dimension,
the policy's mean absolute error on the recorded frames and on the live observations along the
same rollout, and how far the live camera images are from the recorded ones. Large errors on the
recorded frames mean the policy underfits; equal errors with a 0 image difference rule out a
mismatch between the simulator and the data pipeline.

    python scripts/policy_fit_check.py --policy runs/levers/l1-lift/final --demos runs/levers/demos-lift
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="a load_policy spec: checkpoint folder, policy.json, 'default'")
    p.add_argument("--demos", required=True, help="the demo folder the policy was trained on")
    p.add_argument("--episode", type=int, default=0)
    args = p.parse_args()

    from robosteer.app.policy import load_policy
    from robosteer.data.dataset import DemoDataset
    from robosteer.sim.env import SimConfig, make_env

    policy, demos = load_policy(args.policy), DemoDataset(args.demos)
    frames = [demos[int(i)] for i in demos.episode_frames(args.episode)]
    recorded = []
    for f in frames:
        policy.reset()
        recorded.append(np.abs(policy(f.image, f.instruction, f.proprio) - f.action))
    env = make_env(SimConfig(image_size=int(np.asarray(frames[0].image).shape[0])))
    obs = env.reset_task(frames[0].task, int(demos.episode_rows[args.episode]["seed"]))
    live, image_diff = [], []
    for f in frames:
        policy.reset()
        live.append(np.abs(policy(obs.image, obs.instruction, obs.proprio) - f.action))
        image_diff.append(float(np.abs(obs.image.astype(int) - np.asarray(f.image).astype(int)).mean()))
        obs = env.act(f.action)
    print(f"episode {args.episode} ({frames[0].task}, {len(frames)} steps)")
    print("mean |policy - label| on the recorded frames, per dim:", [round(float(x), 3) for x in np.mean(recorded, axis=0)])
    print("mean |policy - label| on the live observations:       ", [round(float(x), 3) for x in np.mean(live, axis=0)])
    print(f"mean |live image - recorded image|: {np.mean(image_diff):.3f} (max over steps {np.max(image_diff):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

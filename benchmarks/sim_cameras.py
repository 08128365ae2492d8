"""Cost of a second camera view: env step time with the agentview alone vs agentview + wrist.

Interleaved rounds (no rendering, one camera, two cameras, order alternating), the median over
rounds of the mean control-step time (``env.act``, which renders every view) under the scripted
expert, and of the render calls alone; prints one JSON object::

    .venv/bin/python benchmarks/sim_cameras.py --image-size 64 --rounds 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from robosteer.sim.env import SimConfig, make_env
from robosteer.sim.expert import ScriptedExpert


def ms_per_step(env, steps: int, task: str = "lift/base") -> float:
    """Mean milliseconds of one ``env.act`` (physics + every view's render) under the expert."""
    expert = ScriptedExpert()
    expert.attach(env)
    seed, elapsed = 0, 0.0
    obs = env.reset_task(task, seed)
    expert.reset()
    for _ in range(steps):
        action = expert(obs.image, obs.instruction, obs.proprio)
        start = time.perf_counter()
        obs = env.act(action)
        elapsed += time.perf_counter() - start
        if env.success():
            seed += 1
            obs = env.reset_task(task, seed)
            expert.reset()
    return elapsed / steps * 1e3


def ms_per_render(env, views: tuple[str, ...], repeats: int) -> float:
    """Mean milliseconds to render these views once (the scene as it is)."""
    start = time.perf_counter()
    for _ in range(repeats):
        for view in views:
            env.render_image(env.view_camera(view))
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=120)
    args = p.parse_args()
    size = args.image_size
    envs = {"no render": make_env(SimConfig(render=False)), "1 camera": make_env(SimConfig(image_size=size)),
            "2 cameras": make_env(SimConfig(image_size=size, cameras=("agentview", "wrist")))}
    for env in envs.values():
        ms_per_step(env, 30)  # warm-up: model build, first render
    steps: dict[str, list[float]] = {k: [] for k in envs}
    renders: dict[str, list[float]] = {"1 camera": [], "2 cameras": []}
    for r in range(args.rounds):
        for name in list(envs) if r % 2 == 0 else list(envs)[::-1]:
            steps[name].append(ms_per_step(envs[name], args.steps))
        env = envs["2 cameras"]
        for name, views in (("1 camera", ("agentview",)), ("2 cameras", ("agentview", "wrist")))[:: 1 if r % 2 == 0 else -1]:
            renders[name].append(ms_per_render(env, views, 50))
    step = {k: statistics.median(v) for k, v in steps.items()}
    render = {k: statistics.median(v) for k, v in renders.items()}
    print(json.dumps({
        "image_size": size, "rounds": args.rounds,
        "ms_per_step": step, "ms_per_render": render,
        "step_ratio_2_vs_1": step["2 cameras"] / step["1 camera"],
        "render_ratio_2_vs_1": render["2 cameras"] / render["1 camera"],
        "step_minus_physics_ratio_2_vs_1": (step["2 cameras"] - step["no render"]) / (step["1 camera"] - step["no render"]),
    }, indent=1))


if __name__ == "__main__":
    main()

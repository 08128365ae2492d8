"""Simulation speed and scripted-expert success of the sim suite.

Prints: env steps/s without rendering and with 64 px / 128 px agentview rendering
(one process), reset times, collection seconds per demo episode, and the expert's
success rate with a 95% Wilson interval on every task of a split (both cores)::

    .venv/bin/python benchmarks/sim_speed.py --episodes 50 --workers 2 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

from robosteer.sim.collect import CollectConfig, collect, measure_expert
from robosteer.sim.env import SimConfig, make_env
from robosteer.sim.expert import ScriptedExpert
from robosteer.sim.tasks import get_split


def steps_per_second(config: SimConfig, steps: int, task: str = "place/base") -> float:
    """Control steps per second of the env driven by the expert (expert time excluded)."""
    env = make_env(config)
    expert = ScriptedExpert()
    expert.attach(env)
    seed, done, elapsed = 0, 0, 0.0
    obs = env.reset_task(task, seed)
    while done < steps:
        action = expert(obs.image, obs.instruction, obs.proprio)
        start = time.perf_counter()
        obs = env.act(action)
        elapsed += time.perf_counter() - start
        done += 1
        if env.success():
            seed += 1
            obs = env.reset_task(task, seed)
    env.close()
    return done / elapsed


def reset_seconds() -> dict[str, float]:
    env = make_env(SimConfig())
    env.reset_task("lift/base", 0)
    start = time.perf_counter()
    for seed in range(1, 11):
        env.reset_task("lift/base", seed)
    same = (time.perf_counter() - start) / 10
    start = time.perf_counter()
    for seed in range(5):
        env.reset_task("place/base" if seed % 2 == 0 else "lift/base", seed)
    rebuild = (time.perf_counter() - start) / 5
    env.close()
    return {"same_layout": same, "new_layout": rebuild}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="default")
    parser.add_argument("--episodes", type=int, default=50, help="expert seeds per task")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="control steps per speed measurement")
    parser.add_argument("--collect-episodes", type=int, default=10, help="demos per pretraining task for the timing")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--only", choices=("speed", "expert", "all"), default="all", help="which part to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out: dict = {}
    if args.only in ("speed", "all"):
        measure_speed(args, out)
    if args.only in ("expert", "all"):
        measure_success(args, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


def measure_speed(args, out: dict) -> None:
    speed = {
        "no_render": steps_per_second(SimConfig(render=False), args.steps),
        "render_64px": steps_per_second(SimConfig(image_size=64), args.steps),
        "render_128px": steps_per_second(SimConfig(image_size=128), args.steps),
    }
    out["steps_per_second"] = speed
    for name, value in speed.items():
        print(f"env steps/s {name:<13} {value:7.1f}", flush=True)
    out["reset_seconds"] = reset_seconds()
    for name, value in out["reset_seconds"].items():
        print(f"reset seconds {name:<12} {value:7.3f}", flush=True)

    split = get_split(args.split)
    with tempfile.TemporaryDirectory() as tmp:
        config = CollectConfig(tasks=tuple(map(str, split.pretrain)), episodes=args.collect_episodes, workers=args.workers)
        report = collect(config, tmp)
    n = len(split.pretrain) * args.collect_episodes
    out["collect"] = {"episodes": n, "workers": args.workers, "seconds": report.seconds, "seconds_per_episode": report.seconds / n}
    print(f"collect: {n} demo episodes (64 px, {args.workers} workers) in {report.seconds:.1f} s = {report.seconds / n:.2f} s/episode")


def measure_success(args, out: dict) -> None:
    split = get_split(args.split)
    start = time.perf_counter()
    results = measure_expert(split.tasks, episodes=args.episodes, workers=args.workers)
    out["expert_seconds"] = time.perf_counter() - start
    out["expert_success"] = {}
    print(f"\nexpert success over {args.episodes} seeds per task (split {split.name!r}):")
    for task in split.tasks:
        r = results[str(task)]
        low, high = r.ci95
        steps = sum(e.steps for e in r.episodes) / r.n
        out["expert_success"][str(task)] = {"rate": r.success_rate, "ci95": [low, high], "n": r.n, "mean_steps": steps}
        print(f"  {str(task):<20} {split.membership(task):<9} {r.success_rate:6.3f}  [{low:.3f}, {high:.3f}]  mean steps {steps:5.1f}")
    worst = min(r.success_rate for r in results.values())
    print(f"lowest expert success: {worst:.3f}; expert benchmark took {out['expert_seconds']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())

"""``robosteer tasks | collect | evaluate``: the simulation suite's commands.

A thin layer over tasks.py, collect.py and evaluate.py; ``collect``'s flags are generated from
``CollectConfig``. Only the standard library and those light config modules are imported at
module level, so ``robosteer --help`` never loads MuJoCo or numpy. ``register`` adds
``tasks`` and ``collect``; ``evaluate`` runs policies the simulator does not load itself, so
it is added by ``register_evaluate`` from the layer that loads them, which says how ``--policy``
becomes a policy and which views it takes (what ``--cameras`` defaults to).
"""

from __future__ import annotations

import argparse
import functools

from ..config_cli import ConfigArguments
from .collect_config import CollectConfig

# every CollectConfig field but the tasks (named by --task / --split) is a flag, with the dataclass's default
COLLECT_ARGUMENTS = ConfigArguments(CollectConfig, exclude=("tasks",))
# evaluate's --cameras: the same field, the views the policy is shown (with several, a tuple of images per step)
VIEW_ARGUMENTS = ConfigArguments(CollectConfig, only=("cameras",), helps={
    "cameras": "views to render, main first: agentview,wrist gives the policy both, videos side by side "
               "(default: the policy's own views, the agentview alone for a one-view policy or the expert)"})


def _named_or_single(spec: str, cameras: tuple[str, ...] | None) -> tuple[str, ...]:
    """The views of a policy whose own the simulator cannot know: the named ones, else the agentview."""
    from .cameras import SINGLE_VIEW

    return cameras or SINGLE_VIEW


def _sim_config(args, policy_cameras):
    """The ``SimConfig`` of ``args``: ``policy_cameras(spec, cameras)`` gives the views (the named ones, checked
    against the policy, or the policy's own when ``--cameras`` is not given)."""
    from .env import SimConfig

    cameras = policy_cameras(args.policy, VIEW_ARGUMENTS.values(args)["cameras"])
    return SimConfig(image_size=args.image_size, cameras=cameras)


def _task_names(args) -> list[str]:
    from .tasks import Task, get_split

    names: list[str] = []
    for item in args.task or []:
        names.extend(n for n in item.split(",") if n)
    tasks = [str(Task.parse(n, args.variation)) for n in names]
    if getattr(args, "split", None):
        split_name, _, part = args.split.partition(":")
        split = get_split(split_name)
        part = part or "pretrain"
        if part not in ("pretrain", "heldout", "all"):
            raise ValueError(f"split part must be pretrain, heldout or all, got {part!r}")
        chosen = {"pretrain": split.pretrain, "heldout": split.heldout, "all": split.tasks}[part]
        tasks.extend(str(t) for t in chosen)
    if not tasks:
        raise ValueError("name at least one task (--task lift) or a split (--split default:pretrain)")
    return list(dict.fromkeys(tasks))


def cmd_tasks(args) -> int:
    from dataclasses import fields

    from .tasks import FAMILIES, all_tasks, get_split
    from .variations import VARIATIONS

    split = get_split(args.split)
    print("Task families:")
    for f in FAMILIES.values():
        print(f"  {f.name:<7} horizon {f.horizon:>3}  {f.description}")
    print("\nVariations (axis: settings):")
    for v in VARIATIONS.values():
        print(f"  {v.name:<13} {v.axis:<12} {v.description}")
    print("\nVariation axes and their fields:")
    base = VARIATIONS["base"]
    for axis in ("visual", "language", "spatial", "environment"):
        config = getattr(base, axis)
        items = ", ".join(f"{f.name}={getattr(config, f.name)!r}" for f in fields(config))
        print(f"  {axis}: {items}")
    print(f"\nSplit {split.name!r} (pretrain / heldout; every family/variation pair is a valid task):")
    for task in all_tasks() if args.all else split.tasks:
        print(f"  {str(task):<22} {split.membership(task):<9} axis={split.axis(task)}")
    return 0


def cmd_collect(args) -> int:
    from .collect import collect

    config = COLLECT_ARGUMENTS.build(args, tasks=tuple(_task_names(args)))
    report = collect(config, args.out)
    print(report.summary())
    print(f"dataset: {args.out}")
    return 0


def cmd_evaluate(args, load_policy, policy_factory, policy_cameras=None) -> int:
    """``load_policy(spec, **execution)``: the policy run in this process; ``policy_factory(spec, **execution)``: a
    picklable zero-argument factory of it, called once in each worker process (with ``--workers`` > 1).
    ``execution`` holds ``execute`` / ``ensemble`` when given (how a chunk policy runs its chunks).
    ``policy_cameras(spec, cameras)``: the views to render (``cameras`` is None without ``--cameras``)."""
    from .evaluate import evaluate

    config = _sim_config(args, policy_cameras or _named_or_single)
    execution = {k: v for k, v in (("execute", args.execute), ("ensemble", args.ensemble)) if v is not None}
    if args.workers > 1 and not args.video_dir and args.horizon is None:
        from .collect import measure_policy

        results = measure_policy(policy_factory(args.policy, **execution), _task_names(args), episodes=args.episodes, seed=args.seed,
                                 workers=args.workers, config=config)
        for result in results.values():
            print(result.summary())
            if args.per_episode:
                print(result.to_frame().to_string(index=False))
        return 0
    policy = load_policy(args.policy, **execution)
    for task in _task_names(args):
        result = evaluate(
            policy,
            task,
            episodes=args.episodes,
            seed=args.seed,
            horizon=args.horizon,
            config=config,
            video_dir=args.video_dir,
            video_format=args.video_format,
        )
        print(result.summary())
        if args.per_episode:
            print(result.to_frame().to_string(index=False))
    return 0


def _add_task_selection(p: argparse.ArgumentParser) -> None:
    """The flags that name tasks (read by ``_task_names``)."""
    p.add_argument("--task", action="append", help="task family or family/variation; repeat or comma-separate")
    p.add_argument("--variation", default=None, help="variation for tasks given without one (default: base)")
    p.add_argument("--split", default=None, help="add a split's tasks: NAME[:pretrain|heldout|all]")


def _add_task_args(p: argparse.ArgumentParser, default_seed: int = 0) -> None:
    _add_task_selection(p)
    p.add_argument("--episodes", type=int, default=10, help="episodes per task (seeds seed..seed+N-1)")
    p.add_argument("--seed", type=int, default=default_seed, help=f"first seed (default {default_seed})")
    p.add_argument("--image-size", type=int, default=64, help="square agentview image side in pixels")


def register(subparsers) -> None:
    p = subparsers.add_parser("tasks", help="list task families, variations, the split and the variation axes")
    p.add_argument("--split", default="default", help="split to show membership for")
    p.add_argument("--all", action="store_true", help="list every family/variation pair, not only the split's")
    p.set_defaults(func=cmd_tasks)

    p = subparsers.add_parser("collect", help="record scripted-expert demonstrations")
    _add_task_selection(p)
    p.add_argument("--out", required=True, help="output dataset folder")
    COLLECT_ARGUMENTS.add_to(p)
    p.set_defaults(func=cmd_collect)


def register_evaluate(subparsers, *, load_policy, policy_factory, policy_help: str, policy_cameras=None) -> None:
    """Add ``robosteer evaluate``; ``load_policy`` and ``policy_factory`` turn ``--policy`` into a policy and
    ``policy_cameras`` names its views (see ``cmd_evaluate``; without it, the agentview unless ``--cameras``),
    ``policy_help`` describes the specs they accept."""
    p = subparsers.add_parser("evaluate", help="closed-loop success rate of a policy")
    from .tasks import EVAL_SEED

    _add_task_args(p, default_seed=EVAL_SEED)
    p.add_argument("--policy", default="expert", help=policy_help)
    p.add_argument("--workers", type=int, default=1, help="worker processes, each with its own simulator and policy")
    p.add_argument("--horizon", type=int, default=None, help="steps per episode (default: the family's)")
    p.add_argument("--execute", type=int, default=None,
                   help="a policy predicting chunks of K actions: run the first N of each chunk open loop (default: all K)")
    p.add_argument("--ensemble", type=float, default=None, metavar="M",
                   help="a chunk policy: temporal ensembling instead, a chunk every step, weights exp(-M i) (ACT: 0.01)")
    p.add_argument("--video-dir", default=None, help="write one video per episode here")
    p.add_argument("--video-format", choices=("gif", "mp4"), default="gif")
    VIEW_ARGUMENTS.add_to(p)
    p.add_argument("--per-episode", action="store_true", help="print the per-episode records")
    p.set_defaults(func=functools.partial(cmd_evaluate, load_policy=load_policy, policy_factory=policy_factory,
                                          policy_cameras=policy_cameras))

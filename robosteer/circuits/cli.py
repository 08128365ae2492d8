"""``robosteer discover``: score every head on demonstrations, select the top k, write scores, mask and head-map."""

from __future__ import annotations

from ..config_cli import ConfigArguments
from .config import DiscoverConfig

# every DiscoverConfig field is a flag (defaults, choices and help from the dataclass)
DISCOVER_ARGUMENTS = ConfigArguments(DiscoverConfig, flags={"keyframes_only": "--all-frames"},
                                     helps={"keyframes_only": "record every frame, not only keyframes"})


def register(subparsers) -> None:
    p = subparsers.add_parser("discover", help="find the heads that matter for a task from demonstrations")
    p.add_argument("--policy", default="default", help="checkpoint folder, or 'default'")
    p.add_argument("--demos", required=True, help="demonstration folder (robosteer collect output or a LeRobot folder)")
    DISCOVER_ARGUMENTS.add_to(p)
    p.add_argument("--max-episodes", type=int, default=None, help="use only the first N episodes of the demos")
    p.add_argument("--out", required=True, help="output folder: scores.csv/.json, mask.json/.safetensors, headmap.html")
    p.set_defaults(func=_discover)


def _discover(args) -> int:
    from ..app.sim_probes import discover_in_sim  # the command line may build the application's sim probes
    from ..data.folders import first_episodes, open_demos
    from ..models import load_vla

    vla = load_vla(args.policy)
    demos = open_demos(args.demos)
    if args.max_episodes is not None:
        demos = first_episodes(demos, args.max_episodes)
    config = DISCOVER_ARGUMENTS.build(args)
    result = discover_in_sim(vla, demos, config, out=args.out)
    frame = result.scores.to_frame().sort_values(result.column, ascending=not result.scores.higher_is_better[result.column])
    print(frame.head(args.top_k).to_string(index=False))
    print(f"selected {len(result.mask)} heads: {', '.join(str(h) for h in result.mask.heads)}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0


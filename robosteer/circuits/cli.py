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


def _open_demos(path: str):
    from pathlib import Path

    root = Path(path)
    if (root / "meta" / "info.json").is_file():
        from ..data.lerobot import LeRobotDataset

        return LeRobotDataset(root)
    from ..data.dataset import DemoDataset

    return DemoDataset(root)


def _discover(args) -> int:
    import numpy as np

    from ..app.sim_probes import discovery_probes  # the command line may build the application's sim probes
    from ..models import load_vla
    from .discover import discover

    vla = load_vla(args.policy)
    demos = _open_demos(args.demos)
    if args.max_episodes is not None:

        keep = np.unique(demos.episode_index)[: args.max_episodes]
        demos = _Subset(demos, np.flatnonzero(np.isin(demos.episode_index, keep)))
    config = DISCOVER_ARGUMENTS.build(args)
    result = discover(vla, demos, config, out=args.out, probes=discovery_probes(demos, config))
    frame = result.scores.to_frame().sort_values(result.column, ascending=not result.scores.higher_is_better[result.column])
    print(frame.head(args.top_k).to_string(index=False))
    print(f"selected {len(result.mask)} heads: {', '.join(str(h) for h in result.mask.heads)}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0


class _Subset:
    """A view of some frames of a FrameDataset (what discovery reads: len, [i], tasks, image)."""

    def __init__(self, base, indices) -> None:
        self.base, self.indices = base, [int(i) for i in indices]
        self.tasks = [base.tasks[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]

    def image(self, i: int):
        return self.base.image(self.indices[i])

"""``robosteer discover``: score every head on demonstrations, select the top k, write scores, mask and head-map."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("discover", help="find the heads that matter for a task from demonstrations")
    p.add_argument("--policy", default="default", help="checkpoint folder, or 'default'")
    p.add_argument("--demos", required=True, help="demonstration folder (robosteer collect output or a LeRobot folder)")
    p.add_argument("--method", default="knn", choices=("knn", "activation", "attribution", "sav", "random"))
    p.add_argument("--top-k", type=int, default=8, help="heads to select")
    p.add_argument("--towers", default="llm", help="comma-separated towers to score: llm,dino,siglip")
    p.add_argument("--position", default="first_action", choices=("first_action", "last_prompt", "mean_action"))
    p.add_argument("--all-frames", action="store_true", help="record every frame, not only keyframes")
    p.add_argument("--stream", action="store_true",
                   help="knn/sav: write activations to OUT/activations as they are recorded (bounded memory)")
    p.add_argument("--probes", default="visual,linguistic,physical", help="probe kinds for activation/attribution")
    p.add_argument("--probe-pairs", type=int, default=12)
    p.add_argument("--probe-task", default=None, help="sim task for the probes (default: the demos' task)")
    p.add_argument("--max-episodes", type=int, default=None, help="use only the first N episodes of the demos")
    p.add_argument("--seed", type=int, default=0)
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

    from ..models import load_vla
    from .discover import DiscoverConfig, discover

    vla = load_vla(args.policy)
    demos = _open_demos(args.demos)
    if args.max_episodes is not None:

        keep = np.unique(demos.episode_index)[: args.max_episodes]
        demos = _Subset(demos, np.flatnonzero(np.isin(demos.episode_index, keep)))
    config = DiscoverConfig(method=args.method, top_k=args.top_k, towers=tuple(args.towers.split(",")),
                            position=args.position, keyframes_only=not args.all_frames,
                            probes=tuple(p for p in args.probes.split(",") if p), probe_pairs=args.probe_pairs,
                            probe_task=args.probe_task, seed=args.seed, stream=args.stream)
    result = discover(vla, demos, config, out=args.out)
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

"""``robosteer finetune`` and ``robosteer pretrain``: thin command-line layers over ``train.loop.train``.

    robosteer finetune --policy default --demos demos/task --method heads --mask heads.json --steps 3000 --out runs/x
    robosteer finetune --policy PATH --demos DIR --method heads --top-k 20 --selector knn --steps 3000 --out runs/y
    robosteer pretrain --out runs/default-policy   # collects the pretraining demos, then trains

Demonstrations are read with ``robosteer.data.dataset.DemoDataset``. Multi-process runs use
the same command under ``accelerate launch`` (see docs/training.md). Heavy imports happen
inside the command functions, so ``robosteer --help`` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

log = logging.getLogger(__name__)

METHODS = ("heads", "lora", "full", "random-heads")  # the same names as train.strategies.METHODS
SELECTORS = ("knn",)


def _add_loop_options(p: argparse.ArgumentParser, lr: float, batch_size: int) -> None:
    p.add_argument("--demos", required=True, help="demonstration folder written by `robosteer collect`")
    p.add_argument("--out", required=True, help="output folder: checkpoints, metrics, final adapter or model")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=batch_size, help="global batch (all processes)")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999), metavar=("B1", "B2"))
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="turn off OpenVLA's image augmentation")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="Gaussian smoothing over action bins (sigma)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def register(subparsers) -> None:
    """Add ``finetune`` and ``pretrain`` to the ``robosteer`` command line."""
    p = subparsers.add_parser("finetune", help="finetune a policy on demonstrations (heads, lora, full, random-heads)")
    p.add_argument("--policy", default="default", help="OpenVLA-format checkpoint folder, or 'default'")
    p.add_argument("--method", choices=METHODS, default="heads")
    p.add_argument("--mask", help="head mask JSON (robosteer.head_mask) for heads/random-heads")
    p.add_argument("--top-k", type=int, help="select the top K heads from the demos instead of --mask")
    p.add_argument("--selector", choices=SELECTORS, default="knn", help="head scorer used with --top-k")
    p.add_argument("--towers", default="llm", help="towers to select heads from with --top-k (comma-separated)")
    p.add_argument("--kv", action="store_true", help="heads: also train the key/value slices")
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--lora-alpha", type=float, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--unnorm-key", default=None, help="which of the policy's dataset statistics to use")
    _add_loop_options(p, lr=5e-4, batch_size=16)
    p.set_defaults(func=finetune_command)

    p = subparsers.add_parser("pretrain", help="collect expert demos of the pretraining split and train the default policy")
    p.add_argument("--out", required=True, help="output folder: demos/, checkpoints, metrics, final/")
    p.add_argument("--split", default="default")
    from ..app.pretrain import PretrainConfig  # light: numpy only

    d = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}  # one source of the recipe's defaults
    p.add_argument("--episodes", type=int, default=d["episodes"], help="clean expert episodes per pretraining task")
    p.add_argument("--noisy-episodes", type=int, default=d["noisy_episodes"],
                   help="episodes per task with executed-action noise")
    p.add_argument("--action-noise", type=float, default=d["action_noise"])
    p.add_argument("--workers", type=int, default=d["workers"], help="collection processes")
    p.add_argument("--steps", type=int, default=d["steps"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--warmup-steps", type=int, default=d["warmup_steps"])
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"])
    p.add_argument("--aux-weight", type=float, default=d["aux_weight"],
                   help="weight of the auxiliary object/goal position targets (0: behaviour cloning only)")
    p.add_argument("--augment-shift", type=int, default=d["augment_shift"],
                   help="random image translation of up to this many pixels (0: off)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=pretrain_command)


def _config(args: argparse.Namespace, unnorm_key: str | None):
    from .config import TrainConfig

    return TrainConfig(out_dir=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       schedule=args.schedule, warmup_steps=args.warmup_steps, betas=tuple(args.betas),
                       weight_decay=args.weight_decay, seed=args.seed, augment=not args.no_augment,
                       label_smoothing=args.label_smoothing, log_every=args.log_every, ckpt_every=args.ckpt_every,
                       resume=not args.no_resume, progress=not args.no_progress, unnorm_key=unnorm_key)


def load_demos(directory: str | Path):
    """The demonstrations in ``directory`` (a ``robosteer.sim`` demo folder)."""
    try:
        from ..data.dataset import DemoDataset
    except ImportError as err:
        raise ValueError(f"reading demonstrations needs robosteer.sim (pip install 'robosteer[sim]'): {err}") from err
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"demonstration folder not found: {directory}")
    return DemoDataset(directory)


def select_heads(vla, demos, k: int, selector: str, towers: tuple[str, ...], unnorm_key: str | None):
    """Top-``k`` heads of ``towers`` by the selector's score over the demonstrations (``circuits.discover``)."""
    from ..circuits.discover import DiscoverConfig, discover

    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; available: {', '.join(SELECTORS)}")
    return discover(vla, demos, DiscoverConfig(method=selector, top_k=k, towers=towers, unnorm_key=unnorm_key)).mask


def finetune_command(args: argparse.Namespace) -> int:
    """``robosteer finetune``: load policy and demos, build the mask and strategy, train."""
    from ..masks import HeadMask
    from ..models import load_vla
    from .loop import train
    from .strategies import LoraSettings, make_strategy

    if args.method in ("heads", "random-heads") and (args.mask is None) == (args.top_k is None):
        raise ValueError(f"--method {args.method} needs exactly one of --mask FILE or --top-k K")
    if args.method in ("lora", "full") and (args.mask or args.top_k):
        raise ValueError(f"--mask/--top-k do not apply to --method {args.method}")
    demos = load_demos(args.demos)
    vla = load_vla(args.policy)
    mask = None
    if args.mask:
        mask = HeadMask.from_json(args.mask, layout=vla.head_layout)
    elif args.top_k is not None:
        towers = tuple(t.strip() for t in args.towers.split(",") if t.strip())
        mask = select_heads(vla, demos, args.top_k, args.selector, towers, args.unnorm_key)
    if mask is not None:
        mask.to_json(Path(args.out) / "mask.json")
    lora = LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)
    strategy = make_strategy(args.method, mask=mask, kv=args.kv, lora=lora, seed=args.seed)
    result = train(vla, demos, strategy, _config(args, args.unnorm_key))
    log.info("finished at step %d (loss %.4f); result in %s; metrics in %s", result.step, result.loss,
             result.output, Path(args.out) / "metrics.csv")
    if result.finished:
        from ..app.policy import write_policy_file

        adapter = None if args.method == "full" else result.output
        spec = write_policy_file(Path(args.out) / "policy.json", base=result.output if adapter is None else args.policy,
                                 adapter=adapter)
        print(f"policy: {spec} (evaluate with: robosteer evaluate --policy {spec} --task ...)")
    return 0


def pretrain_command(args: argparse.Namespace) -> int:
    """``robosteer pretrain``: collect the pretraining split's expert demos and train the default policy on them."""
    from ..app.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(out_dir=args.out, split=args.split, episodes=args.episodes,
                            noisy_episodes=args.noisy_episodes, action_noise=args.action_noise, workers=args.workers,
                            steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                            label_smoothing=args.label_smoothing, aux_weight=args.aux_weight,
                            augment=not args.no_augment, augment_shift=args.augment_shift, seed=args.seed,
                            progress=not args.no_progress)
    path = pretrain(config)
    print(f"default policy written to {path}")
    return 0

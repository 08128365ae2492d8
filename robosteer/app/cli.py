"""The application's commands: ``evaluate``, ``finetune`` and ``pretrain``, which combine the floors below.

- ``robosteer evaluate``: closed-loop success of any policy by name. The simulator runs policies
  without loading them; this layer knows policy names and files (``robosteer.app.policy``), so it
  registers ``evaluate`` with the simulator's command (``robosteer.sim.cli.register_evaluate``) and
  says how ``--policy`` becomes a policy and which views it takes (``--cameras``' default);
- ``robosteer finetune``: demonstrations, a head mask (a file, or discovery's top k), one training
  method (``train.strategies.METHODS``), then ``policy.json``;
- ``robosteer pretrain``: the default policy's recipe (``app.pretrain``).

The training flags are generated from ``TrainConfig``, ``LoraSettings``, ``DiscoverConfig`` and
``PretrainConfig`` (``robosteer.config_cli``), so their defaults live in one place. Only the standard
library and those torch-free config modules are imported here, so ``robosteer --help`` stays instant.

Usage::

    robosteer evaluate --task lift --episodes 20 --policy runs/x/policy.json --workers 2
    robosteer finetune --policy default --demos demos/task --method heads --mask heads.json --steps 3000 --out runs/x
    robosteer finetune --policy PATH --demos DIR --method heads --top-k 20 --selector knn --steps 3000 --out runs/y
    robosteer pretrain --out runs/default-policy   # collects the pretraining demos, then trains

Multi-process runs use the same command under ``accelerate launch`` (see docs/training.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from robosteer.app.pretrain import PretrainConfig
from robosteer.circuits.config import DiscoverConfig
from robosteer.config_cli import ConfigArguments
from robosteer.train.config import TrainConfig
from robosteer.train.strategies import HEAD_METHODS, METHODS, LoraSettings

log = logging.getLogger(__name__)

POLICY_HELP = "'default' (the embedded policy), 'expert' (the scripted expert), a checkpoint folder, or a policy.json (base + adapter)"


def _load_policy(spec: str, **execution):
    from .policy import load_policy

    return load_policy(spec, **execution)


def _policy_factory(spec: str, **execution):
    from .policy import PolicyFactory

    return PolicyFactory(spec, **execution)


def _policy_cameras(spec: str, cameras):
    from .policy import policy_cameras

    return policy_cameras(spec, cameras)


def register(subparsers) -> None:
    """Add ``evaluate``, ``finetune`` and ``pretrain`` to the ``robosteer`` command line."""
    from robosteer.sim.cli import register_evaluate

    register_evaluate(subparsers, load_policy=_load_policy, policy_factory=_policy_factory, policy_help=POLICY_HELP,
                      policy_cameras=_policy_cameras)
    _register_finetune(subparsers)
    _register_pretrain(subparsers)


# ---- finetune and pretrain -------------------------------------------------------------------------------------
# every TrainConfig field is a finetune flag (--out is out_dir; --steps must be given)
TRAIN_ARGUMENTS = ConfigArguments(TrainConfig, flags={"out_dir": "--out"}, required=("steps",), helps={
    "out_dir": "output folder: checkpoints, metrics, final adapter or model, policy.json",
    "resume": "start over even if --out holds a checkpoint", "progress": "hide the progress bar"})
LORA_ARGUMENTS = ConfigArguments(LoraSettings, prefix="lora", only=("r", "alpha", "dropout"))
# the head selection of --top-k: discovery's scorer (--selector) and towers
SELECT_ARGUMENTS = ConfigArguments(DiscoverConfig, only=("method", "towers"), flags={"method": "--selector"}, helps={
    "method": "head scorer used with --top-k", "towers": "towers to select heads from with --top-k"})
PRETRAIN_ARGUMENTS = ConfigArguments(PretrainConfig, flags={"out_dir": "--out"})


def _register_finetune(subparsers) -> None:
    p = subparsers.add_parser("finetune", help=f"finetune a policy on demonstrations ({', '.join(METHODS)})")
    p.add_argument("--policy", default="default",
                   help="OpenVLA-format checkpoint folder, a lerobot pi0 folder, or 'default'")
    p.add_argument("--demos", required=True,
                   help="demonstration folder (`robosteer collect` output or a LeRobot folder)")
    p.add_argument("--method", choices=METHODS, default="heads", help="what trains (default: heads)")
    p.add_argument("--mask", help=f"head mask JSON (robosteer.masks.HeadMask) for {'/'.join(HEAD_METHODS)}")
    p.add_argument("--top-k", type=int, help="select the top K heads from the demos instead of --mask")
    SELECT_ARGUMENTS.add_to(p)
    p.add_argument("--kv", action="store_true", help="heads: also train the key/value slices")
    LORA_ARGUMENTS.add_to(p.add_argument_group("lora (--method lora)"))
    TRAIN_ARGUMENTS.add_to(p.add_argument_group("training (robosteer.train.config.TrainConfig)"))
    p.set_defaults(func=finetune_command)


def _register_pretrain(subparsers) -> None:
    p = subparsers.add_parser("pretrain",
                              help="collect expert demos of the pretraining split and train the default policy")
    PRETRAIN_ARGUMENTS.add_to(p)
    p.set_defaults(func=pretrain_command)


def finetune_command(args: argparse.Namespace) -> int:
    """``robosteer finetune``: load policy and demos, build the mask and strategy, train, write policy.json."""
    from robosteer.app.experiment import write_run_policy
    from robosteer.app.sim_probes import discover_in_sim
    from robosteer.data.folders import open_demos
    from robosteer.masks import HeadMask
    from robosteer.models import load_vla
    from robosteer.train.loop import train
    from robosteer.train.strategies import make_strategy

    if args.method in HEAD_METHODS and (args.mask is None) == (args.top_k is None):
        raise ValueError(f"--method {args.method} needs exactly one of --mask FILE or --top-k K")
    if args.method not in HEAD_METHODS and (args.mask or args.top_k):
        raise ValueError(f"--mask/--top-k do not apply to --method {args.method}")
    demos = open_demos(args.demos)
    vla = load_vla(args.policy)
    mask = None
    if args.mask:
        mask = HeadMask.from_json(args.mask, layout=vla.head_layout)
    elif args.top_k is not None:
        # the run's --seed and --unnorm-key also seed and tokenize the selection (random scorer, probe scenes)
        selection = SELECT_ARGUMENTS.build(args, top_k=args.top_k, unnorm_key=args.unnorm_key, seed=args.seed)
        mask = discover_in_sim(vla, demos, selection).mask
    if mask is not None:
        mask.to_json(Path(args.out) / "mask.json")
    if vla.config.action_chunk > 1:  # a chunk model (OpenVLA-OFT, pi0) trains on each frame's next K actions
        from robosteer.data.chunks import ActionChunks

        demos = ActionChunks(demos, vla.config.action_chunk)
    lora = LORA_ARGUMENTS.build(args)
    strategy = make_strategy(args.method, mask=mask, kv=args.kv, lora=lora, seed=args.seed)
    result = train(vla, demos, strategy, TRAIN_ARGUMENTS.build(args))
    log.info("finished at step %d (loss %.4f); result in %s; metrics in %s", result.step, result.loss,
             result.output, Path(args.out) / "metrics.csv")
    if result.finished:
        spec = write_run_policy(args.out, args.method, args.policy, result.output)
        print(f"policy: {spec} (evaluate with: robosteer evaluate --policy {spec} --task ...)")
    return 0


def pretrain_command(args: argparse.Namespace) -> int:
    """``robosteer pretrain``: collect the pretraining split's expert demos and train the default policy on them."""
    from robosteer.app.pretrain import pretrain

    path = pretrain(PRETRAIN_ARGUMENTS.build(args))
    print(f"default policy written to {path}")
    return 0

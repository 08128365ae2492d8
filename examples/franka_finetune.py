"""The main job: adapt robosteer's default policy to a held-out Franka task from 20 demonstrations.

Collects expert demonstrations of the task, finds the heads that matter (kNN regression at
keyframes, by default), finetunes only those heads and, for comparison, LoRA (r=32,
all-linear) on the same data and schedule, then evaluates zero-shot, heads and LoRA in
closed loop on the same evaluation seeds. Prints a results table with 95% Wilson intervals
and writes the head-map HTML, the head mask and a results JSON. Demonstrations, probes and
evaluations see the policy's own camera views (a two-view policy: agentview and wrist) unless
``--cameras`` names them.

    .venv/bin/python examples/franka_finetune.py                       # defaults: lift/novel_form
    .venv/bin/python examples/franka_finetune.py --task lift --variation paraphrase --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from robosteer.cli import configure_logging
from robosteer.files import atomic_write_text
from robosteer.app.sim_probes import discover_in_sim
from robosteer.circuits.config import DiscoverConfig
from robosteer.app.experiment import (collect_demos, evaluate_policy, finetune, first_demo_seed, steering_config,
                                      token_actions)
from robosteer.app.policy import policy_cameras
from robosteer.app.study import STUDY_METHODS, StudyConfig
from robosteer.circuits.config import METHODS
from robosteer.config_cli import ConfigArguments
from robosteer.sim.tasks import Task, get_split

# the settings the example shares with `robosteer study`: the same flags, defaults and help
STUDY_ARGUMENTS = ConfigArguments(StudyConfig,
                                  only=("policy", "demos", "top_k", "steps", "batch_size", "lr", "lrs", "min_lr_ratio",
                                        "workers", "cameras"))
# the head scorer; not the random control, whose heads the results table would call "heads"
SCORER_ARGUMENTS = ConfigArguments(DiscoverConfig, only=("method",),
                                   choices={"method": [m for m in METHODS if m != "random"]})


def parse_args() -> argparse.Namespace:
    heldout = [str(t) for t in get_split("default").heldout]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="held-out adaptation tasks: " + ", ".join(heldout))
    # lift/novel_form by default: a grasping task the shipped policy performs (lift/base 1.00 closed loop) whose new
    # object forms drop it to 0.24 zero-shot, and where the v5 study's first cells show finetuning closing much of the
    # gap (LoRA 0.64, 50 episodes, docs/results/v5-matrix)
    p.add_argument("--task", default="lift", help="task family, or family/variation")
    p.add_argument("--variation", default="novel_form", help="variation (when --task names only a family)")
    # interleaved as they always were: results.json records vars(args) in this order
    STUDY_ARGUMENTS.add_to(p, "policy", "demos")
    SCORER_ARGUMENTS.add_to(p)
    STUDY_ARGUMENTS.add_to(p, "top_k", "steps", "batch_size", "lr", "lrs", "min_lr_ratio")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per policy (default: 20)")
    STUDY_ARGUMENTS.add_to(p, "workers", "cameras")
    p.add_argument("--seed", type=int, default=0, help="training seed, random draws and demonstrations (expert seeds "
                   "seed x demos onwards: other seeds, other scenes, as in `robosteer study`)")
    p.add_argument("--out", default="runs/franka_finetune")
    args = p.parse_args()
    task = Task.parse(args.task, args.variation)
    if task not in get_split("default").heldout:
        logging.warning("%s is not a held-out adaptation task of the default split (it may be a pretraining task)", task)
    args.task_name = str(task)
    return args


def row(name: str, result, extra: dict) -> dict:
    low, high = result.ci95
    return {"policy": name, "success": result.success_rate, "ci95": [low, high], "successes": result.successes,
            "episodes": result.n, **extra}


def main() -> None:
    configure_logging()
    args = parse_args()
    out = Path(args.out) / args.task_name.replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    views = policy_cameras(args.policy, args.cameras)  # --cameras, checked against the policy, else its own views

    print(f"[1/4] collecting {args.demos} expert demonstrations of {args.task_name} ({','.join(views)})")
    demos = collect_demos(args.task_name, args.demos, out / "demos", seed=first_demo_seed(args.seed, args.demos),
                          workers=args.workers, cameras=views)

    print(f"[2/4] discovering heads ({args.method}, top {args.top_k})")
    from robosteer.models import load_vla

    base = load_vla(args.policy)
    discovery = DiscoverConfig(method=args.method, top_k=args.top_k, seed=args.seed)
    found = discover_in_sim(base, demos, discovery, out=out / "heads")
    print("   selected:", ", ".join(str(h) for h in found.mask.heads))
    print("   head-map:", found.files["headmap"])

    # each method at the study's rate for it (`robosteer study-grid`'s choice, docs/results.md), on its schedule
    rates = StudyConfig(out_dir=str(out), lr=args.lr, lrs=args.lrs)
    study_method = {"heads": f"heads-{args.method}" if f"heads-{args.method}" in STUDY_METHODS else "heads-knn",
                    "lora": "lora"}
    configs = {m: steering_config(out / m, steps=args.steps, batch_size=args.batch_size,
                                  lr=rates.lr_for(study_method[m]), min_lr_ratio=args.min_lr_ratio, seed=args.seed,
                                  action_tokens=token_actions(args.policy)) for m in ("heads", "lora")}
    print(f"[3/4] finetuning heads (lr {configs['heads'].lr:g}) and LoRA (lr {configs['lora'].lr:g}), "
          f"{configs['heads'].steps} steps of {configs['heads'].batch_size}")
    cells = {m: finetune(args.policy, demos, m, config, mask=found.mask) for m, config in configs.items()}

    print(f"[4/4] closed-loop evaluation on {args.episodes} episodes each (evaluation seeds)")

    def success(policy):
        return evaluate_policy(policy, [args.task_name], args.episodes, args.workers, cameras=views,
                               progress=True)[args.task_name]

    results = {"zero-shot": success(args.policy)} | {m: success(cell.policy) for m, cell in cells.items()}

    rows = [row("zero-shot", results["zero-shot"], {"trainable_params": 0})]
    rows += [row(m, results[m], {("policy_file" if k == "policy" else k): v for k, v in cells[m].to_dict().items()
                                 if k != "method"}) for m in cells]
    print(f"\nTask {args.task_name}: {args.demos} demonstrations, {args.episodes} evaluation episodes per policy")
    print(f"{'policy':10s} {'success':>8s} {'95% CI':>16s} {'trainable':>10s} {'train s':>8s}")
    for r in rows:
        print(f"{r['policy']:10s} {r['success']:8.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]   "
              f"{r['trainable_params']:10,d} {r.get('train_seconds', 0):8.1f}")
    summary = {"task": args.task_name, "policy": args.policy, "demos": args.demos, "scorer": args.method,
               "heads": [str(h) for h in found.mask.heads], "settings": vars(args) | {"task_name": args.task_name},
               "results": rows, "wall_seconds": time.perf_counter() - t_start,
               "files": {k: str(v) for k, v in found.files.items()}}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=str))
    print(f"\nresults: {out / 'results.json'}   head-map: {found.files['headmap']}   mask: {found.files['mask']}")
    print(f"total time {summary['wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()

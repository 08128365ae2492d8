"""Training cost of head finetuning vs LoRA: trainable parameters, step time, peak memory.

Two models, each trained with ``heads`` (query + output slices of k LLM heads, k at the
paper's proportion of 20 of 144 heads, rounded) and with ``lora`` (r=32, all-linear,
OpenVLA's defaults):

- ``default-policy``: the default policy's shape (64 px, 6-layer 8-head 128-wide LLM, 4-block towers);
- ``7b-stack``: two Llama layers of OpenVLA-7B's width (4096, 32 heads, MLP 11008) in the same
  OpenVLA class, with tiny vision towers and the tiny vocabulary (so the layers dominate), float32.

Step time: one step = forward, loss, backward, gradient clipping, AdamW; the two methods'
steps alternate in this one process after warm-up; the verdict uses the median over pairs of
(heads step / the lora step right after it), which stays fair when the machine's load drifts.
Peak memory: each (model, method) runs in a fresh subprocess, which builds the model and
attaches the strategy, resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` = 5),
trains, and reads ``VmHWM``: the peak resident memory of the training steps, over a baseline
that holds the model. Reported both as total peak and as the increase over the baseline.
With ``--openvla-7b-config`` it also counts (without allocating, on the meta device) the
trainable parameters of the full OpenVLA-7B at the paper's proportion and at 20 heads.

    .venv/bin/python benchmarks/train_cost.py [--steps 6] [--warmup 2] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robosteer.models.default import DEFAULT_SHAPE

PAPER_FRACTION = 20 / 144  # Robotic Steering: 20 of pi0's 144 heads
MODELS = {
    "default-policy": dict(DEFAULT_SHAPE),
    "7b-stack": dict(image_size=16, patch_size=8, llm_layers=2, llm_heads=32, llm_dim=4096, llm_mlp=11008,
                     dino=(48, 3, 4), siglip=(40, 3, 2), proprio_dim=0),
}
BATCH = {"default-policy": 8, "7b-stack": 1}


def build(model: str):
    from robosteer.models.tiny import tiny_vla

    return tiny_vla(seed=0, **MODELS[model])


def head_mask(vla, fraction: float = PAPER_FRACTION, seed: int = 0):
    """k = round(fraction * LLM heads) LLM heads, drawn at random (the cost does not depend on which)."""
    from robosteer.masks import HeadMask

    pool = vla.head_layout.heads("llm")
    k = max(1, round(fraction * len(pool)))
    chosen = np.random.default_rng(seed).choice(len(pool), size=k, replace=False)
    return HeadMask.from_heads([pool[i] for i in chosen], vla.head_layout)


def strategy(vla, method: str):
    from robosteer.train.strategies import LoraSettings, make_strategy

    return make_strategy(method, mask=head_mask(vla), lora=LoraSettings(r=32))


def batch_for(vla, model: str):
    from robosteer.train.batches import BatchBuilder

    size = MODELS[model]["image_size"]
    rng = np.random.default_rng(0)
    frames = [{"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "instruction": "pick up the red cube",
               "action": rng.uniform(-1, 1, 7), "proprio": rng.uniform(-1, 1, 7)} for _ in range(BATCH[model])]
    return BatchBuilder(vla).collate(frames)


def make_step(vla, batch):
    from robosteer.train.loss import action_loss
    from robosteer.train.strategies import trainable_parameters

    params = [p for _, p in trainable_parameters(vla)]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vla.train()

    def step() -> float:
        out = vla(**batch.model_inputs())
        loss = action_loss(out.logits, batch.labels, vla.n_prefix, vla.action_tokenizer)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, sum(p.numel() for p in params)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_probe(model: str, method: str, steps: int) -> dict:
    """Run in a fresh process: peak RSS of ``steps`` training steps over the loaded, prepared model."""
    import gc

    vla = build(model)
    strategy(vla, method).prepare(vla)
    batch = batch_for(vla, model)
    step, _ = make_step(vla, batch)
    gc.collect()
    base = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
    for _ in range(steps):
        step()
    peak = _status_kb("VmHWM")
    return {"base_kb": base, "peak_kb": peak, "increase_kb": peak - base}


def timing(model: str, steps: int, warmup: int) -> dict:
    runs = {}
    for method in ("heads", "lora"):
        vla = build(model)
        s = strategy(vla, method)
        s.prepare(vla)
        step, n = make_step(vla, batch_for(vla, model))
        runs[method] = {"step": step, "trainable": n, "times": [],
                        "heads": len(s.mask.heads) if method == "heads" else None}
    for i in range(warmup + steps):
        for method, run in runs.items():  # alternate, so both see the same machine load
            t0 = time.perf_counter()
            run["step"]()
            if i >= warmup:
                run["times"].append(time.perf_counter() - t0)
    out = {m: {"trainable": r["trainable"], "heads": r["heads"], "median_s": statistics.median(r["times"]),
               "times_s": r["times"]} for m, r in runs.items()}
    # each heads step against the lora step right after it: robust to the machine's load drifting during the run
    out["paired_ratio_median"] = statistics.median(a / b for a, b in zip(runs["heads"]["times"], runs["lora"]["times"]))
    return out


def full_7b_counts(config_path: str) -> dict:
    """Trainable parameters on the real OpenVLA-7B layout (meta device: nothing is allocated)."""
    from torch import nn

    from robosteer.models import build_vla_from_config
    from robosteer.train.strategies import HeadsStrategy, all_linear_targets, count_trainable

    vla = build_vla_from_config(config_path, device="meta")
    lora = sum(32 * (m.in_features + m.out_features) for name, m in vla.named_modules()
               if isinstance(m, nn.Linear) and name in set(all_linear_targets(vla)))
    out = {"lora_r32_all_linear": lora, "llm_heads_total": len(vla.head_layout.heads("llm"))}
    for label, fraction in (("paper_fraction", PAPER_FRACTION), ("20_heads", None)):
        vla_h = build_vla_from_config(config_path, device="meta")
        n_llm = len(vla_h.head_layout.heads("llm"))
        mask = head_mask(vla_h, fraction if fraction is not None else 20 / n_llm)
        HeadsStrategy(mask).prepare(vla_h)
        out[f"heads_{label}"] = {"heads": len(mask.heads), "trainable": count_trainable(vla_h)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is stable on a shared 2-core box)")
    parser.add_argument("--models", default="default-policy,7b-stack")
    parser.add_argument("--openvla-7b-config", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"
                                                           / "openvla-7b-config.json"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe, args.memory_steps)))
        return

    results = {"threads": args.threads, "models": {}}
    for model in args.models.split(","):
        t = timing(model, args.steps, args.warmup)
        mem = {}
        for method in ("heads", "lora"):
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run([sys.executable, __file__, "--memory-probe", model, method, "--threads",
                                   str(args.threads), "--memory-steps", str(args.memory_steps)],
                                  capture_output=True, text=True, env=env, check=True)
            mem[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        results["models"][model] = {"timing": t, "memory": mem}
        h, l = t["heads"], t["lora"]
        print(f"\n== {model} (batch {BATCH[model]}, {args.threads} thread(s)) ==")
        print(f"trainable parameters: heads ({h['heads']} LLM heads, q+o) {h['trainable']:,} | lora r32 all-linear "
              f"{l['trainable']:,} | ratio {h['trainable'] / l['trainable']:.4f} (goal <= 0.05: "
              f"{'met' if h['trainable'] / l['trainable'] <= 0.05 else 'NOT met'})")
        ratio = t["paired_ratio_median"]
        print(f"step time (median of {args.steps}): heads {h['median_s'] * 1e3:.1f} ms | lora {l['median_s'] * 1e3:.1f} "
              f"ms | ratio of medians {h['median_s'] / l['median_s']:.3f} | median paired ratio {ratio:.3f} "
              f"(goal <= 0.8: {'met' if ratio <= 0.8 else 'NOT met'})")
        mh, ml = mem["heads"], mem["lora"]
        peak_ratio = mh["peak_kb"] / ml["peak_kb"]
        print(f"peak RSS: heads {mh['peak_kb'] / 1024:.0f} MiB (+{mh['increase_kb'] / 1024:.0f} over model) | lora "
              f"{ml['peak_kb'] / 1024:.0f} MiB (+{ml['increase_kb'] / 1024:.0f}) | ratio {peak_ratio:.3f} "
              f"(increase ratio {mh['increase_kb'] / max(ml['increase_kb'], 1):.3f}) (goal <= 1.0: "
              f"{'met' if peak_ratio <= 1.0 else 'NOT met'})")
    if args.openvla_7b_config and Path(args.openvla_7b_config).is_file():
        counts = full_7b_counts(args.openvla_7b_config)
        results["openvla_7b_counts"] = counts
        print(f"\n== OpenVLA-7B layout (counted on the meta device) ==\nlora r32 all-linear: "
              f"{counts['lora_r32_all_linear']:,}")
        for label in ("heads_paper_fraction", "heads_20_heads"):
            c = counts[label]
            print(f"heads ({c['heads']} of {counts['llm_heads_total']} LLM heads, q+o): {c['trainable']:,} | ratio "
                  f"{c['trainable'] / counts['lora_r32_all_linear']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

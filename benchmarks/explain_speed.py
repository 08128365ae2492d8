"""What ``robosteer.explain`` costs next to a plain forward pass, on the default policy's shape (random weights).

Conditions, interleaved round by round so that machine noise hits all alike: one plain forward over the
prompt; ``predict_action`` (for a token model the cached decode: the prefix forward + A - 1 one-token
steps); ``explain``; and ``explain`` with an ablation and a base model (a heads adapter of a copy).
Prints the median time of each, the per-round ratios to the plain forward and to ``predict_action``
(median and 10-90 % spread), and the exact number of full forwards, LLM calls and backward calls each
condition makes (counted by a forward pre-hook on the model and on its LLM and by wrapping
``torch.autograd.grad`` / ``backward``: counts, not timings, so noise cannot move them).

    .venv/bin/python benchmarks/explain_speed.py [--rounds 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

import robosteer
from robosteer.explanation.counting import counting
from robosteer.masks import HeadMask
from robosteer.models.default import default_config
from robosteer.models.loading import build_vla_from_config
from robosteer.models.tiny import default_norm_stats

TEXT = "pick up the red cube"


def adapted_copy(vla):
    """The model with a heads adapter on two LLM heads (small random deltas), for ``base=``."""
    from robosteer.train.strategies import make_strategy

    adapted = copy.deepcopy(vla)
    strategy = make_strategy("heads", mask=HeadMask.from_heads(["llm.L5H0", "llm.L4H3"], vla.head_layout))
    strategy.prepare(adapted)
    with torch.no_grad():
        for p in strategy.deltas.parameters():
            p.copy_(torch.randn_like(p) * 0.01)
    return adapted.eval()


@torch.no_grad()
def plain_forward(vla, ids, pixels, prop):
    return vla(input_ids=ids, pixel_values=pixels, proprio=prop)


def measure(name: str, vla, rounds: int) -> None:
    rng = np.random.default_rng(0)
    size = vla.config.image_size
    image, proprio = rng.integers(0, 256, (size, size, 3), dtype=np.uint8), rng.uniform(-0.5, 0.5, 7)
    ids, pixels, prop = vla.action_inputs(image, TEXT, proprio=proprio)
    if vla.config.parallel_decoding:
        from robosteer.models.action_heads import with_action_slots

        ids = with_action_slots(ids, vla.n_action_slots)
    adapted = adapted_copy(vla)
    heads = [h for h, _ in robosteer.explain(vla, image, TEXT, proprio=proprio).top(4, dim=2)]
    conditions = {
        "forward": lambda: plain_forward(vla, ids, pixels, prop),
        "predict_action": lambda: vla.predict_action(image, TEXT, proprio=proprio),
        "explain": lambda: robosteer.explain(vla, image, TEXT, proprio=proprio),
        "explain+ablate+base": lambda: robosteer.explain(adapted, image, TEXT, proprio=proprio, heads=heads, base=vla),
    }
    counts = {}
    for key, fn in conditions.items():
        with counting(vla, adapted) as counts[key]:
            fn()
    times = {key: [] for key in conditions}
    for _ in range(3):  # warm-up
        for fn in conditions.values():
            fn()
    for _ in range(rounds):
        for key, fn in conditions.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    t = {k: np.array(v) for k, v in times.items()}
    print(f"{name}: {len(vla.sites('llm'))} LLM heads, action {vla.config.action_chunk} x {vla.config.action_dim}")
    for key in conditions:
        to_forward, to_predict = t[key] / t["forward"], t[key] / t["predict_action"]
        c = counts[key]
        print(f"  {key:<20} {np.median(t[key]) * 1e3:8.2f} ms   / forward {np.median(to_forward):6.2f} "
              f"[{np.percentile(to_forward, 10):.2f}-{np.percentile(to_forward, 90):.2f}]   / predict_action "
              f"{np.median(to_predict):5.2f} [{np.percentile(to_predict, 10):.2f}-{np.percentile(to_predict, 90):.2f}]   "
              f"full forwards {c['forward']}, LLM calls {c['llm']}, backward {c['backward']}")
    explained = robosteer.explain(adapted, image, TEXT, proprio=proprio, heads=heads, base=vla)
    print(f"  explain+ablate+base reports passes={explained.passes}, backward={explained.backward} "
          f"(a pass = what predict_action costs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median over {args.rounds} interleaved rounds")
    cfg, tok = default_config(default_norm_stats())
    vla = build_vla_from_config(cfg, tokenizer=tok, seed=0).eval()
    measure("default-policy shape, token actions (64px, llm 6x8, proprio)", vla, args.rounds)
    chunk = build_vla_from_config(cfg.replace(action_head="l1-regression", action_chunk=8), tokenizer=tok, seed=0).eval()
    measure("default-policy shape, L1 regression head, chunk K=8", chunk, args.rounds)


if __name__ == "__main__":
    main()

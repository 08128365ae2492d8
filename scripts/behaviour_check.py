"""Digest of what a 2-step training run and a kNN discovery produce, to show a refactor changed nothing.

Collects a few expert demonstrations, then runs on them ``robosteer discover`` (knn and attribution) and
``robosteer finetune`` for 2 steps with each method (heads on the discovered mask, lora, full,
random-heads), then prints one JSON object: the sha256 of every tensor in every safetensors
file written (adapters, checkpoints, masks), of every score table, of the demonstrations' files
(images, steps, statistics), and the logged losses.
Run it on two commits and compare the two JSON files (``diff`` or ``--compare``)::

    python scripts/behaviour_check.py --work /tmp/bc-before > before.json   # on the old commit
    python scripts/behaviour_check.py --work /tmp/bc-after --compare before.json

Wall-clock fields (timings, dates) are left out; everything else must be bit-identical.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

METHODS = ("heads", "lora", "full", "random-heads")


def run(*args: str) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
           "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "egl")}
    cmd = [sys.executable, "-m", "robosteer.cli", *args]
    print("+", " ".join(args), file=sys.stderr)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def tensor_digests(path: Path) -> dict[str, str]:
    from safetensors.numpy import load_file

    out = {}
    for key, value in sorted(load_file(str(path)).items()):
        out[key] = f"{value.dtype}{list(value.shape)}:" + hashlib.sha256(value.tobytes()).hexdigest()[:16]
    return out


def digest(root: Path) -> dict:
    result: dict = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if not path.is_file():
            continue
        if rel.startswith("demos/"):
            if path.suffix in (".npy", ".parquet") or path.name == "dataset_statistics.json":
                result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        elif path.suffix == ".safetensors":
            result[rel] = tensor_digests(path)
        elif path.name == "scores.csv":
            result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        elif path.name == "mask.json":
            data = json.loads(path.read_text())
            result[rel] = {k: v for k, v in data.items() if k not in ("created", "date")}
        elif path.name == "metrics.csv":
            with open(path) as f:
                result[rel] = [{k: v for k, v in row.items() if k in ("step", "loss", "lr", "grad_norm")}
                               for row in csv.DictReader(f)]
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="scratch folder (created)")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--compare", help="a JSON file printed by an earlier run: exit 1 unless identical")
    args = p.parse_args()
    work = Path(args.work)
    demos = work / "demos"
    if not (demos / "meta.json").is_file():
        run("collect", "--task", "push/paraphrase", "--episodes", str(args.episodes), "--workers", "1",
            "--out", str(demos))
    run("discover", "--demos", str(demos), "--method", "knn", "--top-k", "4", "--out", str(work / "knn"))
    run("discover", "--demos", str(demos), "--method", "attribution", "--top-k", "4", "--probe-pairs", "2",
        "--out", str(work / "attribution"))
    for method in METHODS:
        extra = ["--mask", str(work / "knn" / "mask.json")] if method in ("heads", "random-heads") else []
        run("finetune", "--demos", str(demos), "--method", method, *extra, "--steps", "2", "--batch-size", "4",
            "--log-every", "1", "--ckpt-every", "1", "--no-progress", "--out", str(work / method))
    result = digest(work)
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text)
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        if before != result:
            keys = sorted(k for k in set(before) | set(result) if before.get(k) != result.get(k))
            print(f"DIFFERENT: {len(keys)} entries differ: {keys}", file=sys.stderr)
            return 1
        print(f"IDENTICAL: {len(result)} entries", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

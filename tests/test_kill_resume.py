"""Kill tests with real processes: a training run, a streamed recording and a two-cell study, each killed with SIGKILL
at seeded random moments and inside atomic writes, then run again on the same folder until it finishes.

After every kill, nothing on disk under a final name is partial (every JSON, safetensors, .npy and JSONL file there
reads completely), the newest checkpoint loads in full, and whatever final output already exists (an adapter, the
activation folder, a study cell) is already the uninterrupted run's. After the last run, the outputs are bit for bit
the uninterrupted run's: adapter, checkpoint and activation files byte for byte, metrics and cells field for field
except the measured wall times and memory (which no two runs share).

The jobs run in ``tests/kill_worker.py``'s fork server (one process imports everything, each run is a forked child
of its own), so a run costs its work, not ~6 s of imports. The default run kills each job 3 times (two random
moments, one inside a checkpoint or cell write); ``-m slow`` tries 19 to 27 kills per job, over five more seeds,
inside every kind of file the job writes, and several in a row on one folder. A training run killed after a
checkpoint must continue from that checkpoint (a restart from step 0 would also end bit-exact). A recording has no
checkpoints: a killed one leaves only its dot-named ``.partial`` folder, and the next run records again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .kill_worker import canonical_bytes

REPO = Path(__file__).resolve().parents[1]
TIMED = ("train_seconds", "peak_rss_mb", "resumed_at_step", "cell_seconds")  # a cell's measured costs: differ run to run

pytestmark = pytest.mark.skipif(not (hasattr(os, "fork") and Path("/proc/self/fd").is_dir()),
                                reason="the kill worker forks and reads /proc/self/fd (Linux)")


class ForkServer:
    """``tests/kill_worker.py serve`` in a subprocess: ``run(job, args, kill_after=..., pause=...)`` -> its fate."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.log = scratch / "server.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.kill_worker", "serve"], cwd=REPO, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self.runs = 0
        assert "ready" in self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the kill worker exited: {self.log.read_text()[-3000:]}")
        return json.loads(line)

    def run(self, job: str, *args, kill_after: float | None = None, pause: str | None = None) -> dict:
        self.runs += 1
        log = self.scratch / f"run-{self.runs:03d}-{job}.log"
        request = {"job": job, "args": [str(a) for a in args], "log": str(log), "kill_after": kill_after,
                   "pause": pause, "marker": str(self.scratch / "paused"), "timeout": 300}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        answer["log"] = log
        if answer["reason"] == "timeout":
            raise AssertionError(f"{job} {args} ran past 300 s; see {log}")
        return answer

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ForkServer(tmp_path_factory.mktemp("kill"))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def base(server):
    path = server.scratch / "base"
    assert server.run("base", path)["returncode"] == 0
    return path


@pytest.fixture(scope="module")
def references(server, base):
    """Each job run twice without interruption, when first asked for: ``{job: (folder, seconds)}``. The two runs
    must agree (else no comparison below could mean anything); ``seconds`` is the faster one's duration, over
    which the random kills are drawn."""
    made: dict[str, tuple[Path, float]] = {}

    def reference(job: str) -> tuple[Path, float]:
        if job not in made:
            seconds = []
            for name in ("reference", "reference-2"):
                done = server.run(job, *job_args(job, server.scratch / job / name, base))
                assert done["returncode"] == 0, done["log"].read_text()[-3000:]
                seconds.append(done["seconds"])
            SAME[job](server.scratch / job / "reference", server.scratch / job / "reference-2")
            made[job] = server.scratch / job / "reference", min(seconds)
            print(f"\n{job}: an uninterrupted run takes {min(seconds):.2f}-{max(seconds):.2f} s")
        return made[job]
    return reference


def job_args(job: str, out: Path, base: Path) -> tuple:
    return (out, base) if job == "study" else (out,)


# --- what a folder may hold after a kill ------------------------------------------------------------------
def final_named(root: Path) -> list[Path]:
    """Files under ``root`` with no dot-named part (temporary files and ``.partial`` folders are dot-named)."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not any(part.startswith(".")
                                                                          for part in p.relative_to(root).parts)]


def assert_reads_completely(path: Path) -> None:
    """A file under its final name must be whole: it parses, its tensors and arrays load, no line is torn."""
    from safetensors.torch import load_file

    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".safetensors":
        load_file(str(path))
    elif path.suffix == ".npy":
        np.load(path, mmap_mode="r", allow_pickle=False)
    elif path.suffix == ".jsonl":
        text = path.read_text()
        assert not text or text.endswith("\n"), f"{path} ends in a torn line"
        for line in text.splitlines():
            json.loads(line)


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_tensors(a: Path, b: Path) -> None:
    import torch

    x, y = tensors(a), tensors(b)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x), b


def assert_same_bytes(a: Path, b: Path) -> None:
    """The same files in both folders, byte for byte (safetensors: header with sorted keys, see canonical_bytes)."""
    names = sorted(p.relative_to(a) for p in final_named(a))
    assert names == sorted(p.relative_to(b) for p in final_named(b)), (a, b)
    for name in names:
        assert canonical_bytes(a / name) == canonical_bytes(b / name), f"{b / name} differs from {a / name}"


def assert_checkpoint_loads(root: Path) -> None:
    """The newest complete checkpoint under ``root`` (if any) loads in full; a resume reads that one."""
    from robosteer.train.state import latest_checkpoint, read_state

    latest = latest_checkpoint(root)
    if latest is None:
        return
    meta = read_state(latest)
    assert sorted(tensors(latest / "trainable.safetensors")) == meta["parameters"]
    for name in ("optimizer.safetensors", "rng.safetensors"):
        tensors(latest / name)


def metric_rows(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in rows]


def untimed(cell: dict) -> dict:
    return {k: v for k, v in cell.items() if k not in TIMED}


# --- per job: the checks after a kill, and the comparison with the uninterrupted run ----------------------
def check_train(out: Path, ref: Path) -> None:
    assert_checkpoint_loads(out / "checkpoints")
    if (out / "final").exists():  # it appears only when complete, so it is already the uninterrupted run's
        assert_same_bytes(ref / "final", out / "final")


def same_train(ref: Path, out: Path) -> None:
    assert_same_bytes(ref / "final", out / "final")
    steps = sorted(p.name for p in (ref / "checkpoints").glob("step-*"))
    assert steps == sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    for step in steps:
        a, b = ref / "checkpoints" / step, out / "checkpoints" / step
        for name in ("trainable", "optimizer", "rng", "ema"):
            assert_same_tensors(a / f"{name}.safetensors", b / f"{name}.safetensors")
        sa, sb = (json.loads((d / "state.json").read_text()) for d in (a, b))
        for meta in (sa, sb):
            meta.pop("elapsed_s"), meta["config"].pop("out_dir")
        assert sa == sb
    assert metric_rows(ref) == metric_rows(out)


def check_record(out: Path, ref: Path) -> None:
    from robosteer.circuits.record import HeadActivations

    if (out / "acts").exists():
        assert_same_bytes(ref / "acts", out / "acts")
        HeadActivations.load(out / "acts")
    else:
        with pytest.raises(FileNotFoundError):
            HeadActivations.load(out / "acts")
    for partial in out.glob(".acts.*.partial"):  # what a killed recording leaves: refuses to load
        assert not (partial / "index.json").exists()
        with pytest.raises((ValueError, FileNotFoundError)):
            HeadActivations.load(partial)


def same_record(ref: Path, out: Path) -> None:
    import torch

    from robosteer.circuits.record import HeadActivations

    assert_same_bytes(ref / "acts", out / "acts")
    a, b = HeadActivations.load(ref / "acts"), HeadActivations.load(out / "acts")
    assert all(torch.equal(a.acts[t], b.acts[t]) for t in a.acts) and np.array_equal(a.actions, b.actions)


def study_cells(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): json.loads(p.read_text()) for p in final_named(out / "cells")} \
        if (out / "cells").exists() else {}


def check_study(out: Path, ref: Path) -> None:
    from robosteer.app.study import CellResult

    reference = study_cells(ref)
    for name, cell in study_cells(out).items():  # a cell is written once, complete: it is already the final one
        CellResult(**cell)
        assert untimed(cell) == untimed(reference[name])
    for policy in (out / "work").rglob("policy.json") if (out / "work").exists() else []:
        run = policy.parent
        assert_same_bytes(ref / run.relative_to(out) / "final", run / "final")
    for checkpoints in (out / "work").rglob("checkpoints") if (out / "work").exists() else []:
        assert_checkpoint_loads(checkpoints)


def same_study(ref: Path, out: Path) -> None:
    a, b = study_cells(ref), study_cells(out)
    assert len(a) == 2 and a.keys() == b.keys()
    assert all(untimed(a[k]) == untimed(b[k]) for k in a)
    for final in (ref / "work").rglob("final"):
        assert_same_bytes(final, out / final.relative_to(ref))
    for name in ("mask.json", "mask.safetensors", "scores.csv", "heads.json"):
        for path in (ref / "work").rglob(name):
            assert canonical_bytes(path) == canonical_bytes(out / path.relative_to(ref)), path
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (ref, out))
    assert [untimed(c) for c in ra["cells"]] == [untimed(c) for c in rb["cells"]]


CHECK = {"train": check_train, "record": check_record, "study": check_study}
SAME = {"train": same_train, "record": same_record, "study": same_study}


# --- the episodes -------------------------------------------------------------------------------------------
def run_killed(server, references, base, job: str, name: str, kills: list[dict]) -> list[dict]:
    """Run ``job`` in a fresh folder, killing it once per entry of ``kills`` (``{"after": s}`` or
    ``{"pause": "substring@n"}``), checking the folder after each kill; then run it to the end and compare."""
    ref, _ = references(job)
    out = server.scratch / job / name
    fates = []
    for kill in kills:
        fate = server.run(job, *job_args(job, out, base), kill_after=kill.get("after"), pause=kill.get("pause"))
        fates.append(fate)
        if fate["killed"]:
            assert_named_files_complete(out)
            CHECK[job](out, ref)
        else:  # the run finished before the kill came: it must have finished cleanly
            assert fate["returncode"] == 0, fate["log"].read_text()[-3000:]
        if "pause" in kill:
            assert fate["reason"] == "pause" and fate["killed"], f"{job}: no atomic write matched {kill['pause']}"
    resume_at = checkpoint_step(out / "checkpoints") if job == "train" else None
    cells_resume_at = unfinished_cells(out) if job == "study" else {}
    done = server.run(job, *job_args(job, out, base))
    assert done["returncode"] == 0, done["log"].read_text()[-3000:]
    assert_named_files_complete(out)
    # training continued from the newest checkpoint, not from step 0 (which would end bit-exact too)
    if resume_at is not None:
        result = json.loads(done["log"].read_text().split("RESULT ")[-1])
        assert result == {"start_step": resume_at, "step": 16}, (result, resume_at)
    for cell, step in cells_resume_at.items():
        assert json.loads((out / cell).read_text())["resumed_at_step"] == step, cell
    SAME[job](ref, out)
    return fates


def unfinished_cells(out: Path) -> dict[str, int]:
    """The study's cells not yet written, each with the step of its training run's newest checkpoint (0: none)."""
    def step(method: str) -> int:  # a method's training folder is named by its rate (study._adapt)
        runs = sorted((out / "work/lift_base/seed1").glob(f"{method}-lr*"))
        return checkpoint_step(runs[0] / "checkpoints") if runs else 0

    return {f"cells/lift_base/{method}/seed1.json": step(method)
            for method in ("heads-knn", "random-heads") if not (out / f"cells/lift_base/{method}/seed1.json").exists()}


def checkpoint_step(root: Path) -> int:
    from robosteer.train.state import latest_checkpoint

    latest = latest_checkpoint(root)
    return 0 if latest is None else int(latest.name.removeprefix("step-"))


def assert_named_files_complete(out: Path) -> None:
    if out.exists():
        for path in final_named(out):
            assert_reads_completely(path)


def random_kills(seed: int, seconds: float, n: int = 2) -> list[dict]:
    """``n`` kills at moments drawn uniformly over 5-90% of an uninterrupted run's duration."""
    rng = np.random.default_rng(seed)
    return [{"after": float(rng.uniform(0.05, 0.9) * seconds)} for _ in range(n)]


def report(job: str, episodes: list[list[dict]]) -> int:
    fates = [f for episode in episodes for f in episode]
    landed = sum(f["killed"] for f in fates)
    paused = sum(f["killed"] and f["reason"] == "pause" for f in fates)
    print(f"\n{job}: {landed} of {len(fates)} kills landed ({paused} inside an atomic write, "
          f"{landed - paused} at random moments), every one survived bit-exactly")
    return landed


PAUSES = {  # where the default run stops a job inside an atomic write
    "train": "trainable.safetensors@3",  # the third checkpoint's weights: the checkpoint folder is half built
    "record": "targets.safetensors@1",  # the recording's last files, its folder not yet renamed into place
    "study": "seed1.json@1",  # the first cell's result file
}
MORE_PAUSES = {  # and the slow run inside every kind of file each job writes
    "train": ["metrics.jsonl@1", "trainable.safetensors@1", "optimizer.safetensors@2", "ema.safetensors@4",
              "rng.safetensors@5", "state.json@6", "adapter.safetensors@1", "adapter.json@1"],
    "record": ["index.json@1"],
    "study": ["study.json@1", "scores.csv@1", "mask.json@2", "trainable.safetensors@2", "state.json@5",
              "adapter.safetensors@1", "policy.json@2", "seed1.json@2", "results.json@1"],
}


@pytest.mark.parametrize("job", ["train", "record", "study"])
def test_a_killed_job_resumes_bit_exactly(server, references, base, job):
    _, seconds = references(job)
    episodes = [run_killed(server, references, base, job, "random-0", random_kills(0, seconds)),
                run_killed(server, references, base, job, "in-write", [{"pause": PAUSES[job]}])]
    assert report(job, episodes) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("job", ["train", "record", "study"])
def test_a_job_killed_many_times_resumes_bit_exactly(server, references, base, job):
    _, seconds = references(job)
    episodes = [run_killed(server, references, base, job, f"random-{seed}", random_kills(seed, seconds, n=3))
                for seed in range(1, 6)]
    episodes += [run_killed(server, references, base, job, f"in-write-{i}", [{"pause": spec}])
                 for i, spec in enumerate(MORE_PAUSES[job])]
    # several kills in a row on one folder: the first inside a write, then two at random moments
    episodes.append(run_killed(server, references, base, job, "pause-then-random",
                               [{"pause": PAUSES[job]}] + random_kills(99, seconds / 2)))
    assert report(job, episodes) >= len(MORE_PAUSES[job]) + 6

"""Worker for ``tests/test_kill_resume.py``: three resumable jobs small enough to finish in a few seconds, run in
real processes that the test kills with SIGKILL and runs again on the same folder.

- ``train OUT``: a heads finetuning run of a tiny model (checkpoints every 2 steps, a weight average); it
  prints ``RESULT {"start_step": ..., "step": ...}`` when it finishes;
- ``record OUT``: a streamed recording of every head's output (``record_heads(out=OUT/acts)``);
- ``base OUT`` writes the tiny base policy the study adapts;
- ``study OUT BASE``: a two-cell steering study (``run_study``) of the tiny base policy at ``BASE``, with the
  simulator replaced by fakes (demonstrations are synthetic frames; the evaluation's success counts are a hash
  of the trained adapter's bytes, so a cell's result changes with any bit of its training).

``python -m tests.kill_worker serve`` imports everything once and then, for each JSON job read from stdin,
forks a fresh child that runs one job, kills it with SIGKILL when told to, and answers one JSON line:
``{"returncode": ..., "killed": ..., "seconds": ...}``. Forking from a process that has imported torch but
run nothing saves the ~6 s of imports per run; each child is still a process of its own, killed for real.
A job is ``{"job": "train", "args": [OUT], "log": FILE, "kill_after": s | null, "pause": SPEC | null,
"marker": FILE}``. ``pause`` is ``"substring@n"``: the child stops inside the n-th atomic write (at its
``os.fsync``) of a file whose temporary path contains ``substring``, cuts that temporary file to half its
length (what a kill in the middle of the write leaves), creates ``marker`` and waits to be killed there.
The hook is this file's monkeypatch of ``os.fsync``; the library has none.

``python -m tests.kill_worker train OUT`` (etc.) runs one job in the foreground.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

TRAIN_STEPS = 16
HEADS = ("llm.L0H1", "llm.L1H2", "llm.L1H3")
RECORD_FRAMES = 96


# --- the jobs -------------------------------------------------------------------------------------
def train_job(out: str) -> None:
    from robosteer.masks import HeadMask
    from robosteer.train import TrainConfig, train
    from robosteer.train.strategies import make_strategy

    from .train_helpers import make_frames, tiny_train_vla

    vla = tiny_train_vla()
    mask = HeadMask.from_heads(HEADS, vla.head_layout)
    config = TrainConfig(out_dir=out, steps=TRAIN_STEPS, batch_size=4, lr=3e-3, schedule="cosine", warmup_steps=2,
                         ckpt_every=2, keep_checkpoints=2, log_every=1, progress=False, augment=True,
                         label_smoothing=0.5, ema_decay=0.9)
    result = train(vla, make_frames(8), make_strategy("heads", mask=mask, kv=True), config)
    print("RESULT", json.dumps({"start_step": result.start_step, "step": result.step}), flush=True)


def record_frames(n: int = RECORD_FRAMES, size: int = 28) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
             "instruction": ["pick up the red cube", "lift the green ball now"][i % 2],
             "action": rng.uniform(-0.9, 0.9, 7), "proprio": rng.uniform(-1, 1, 7), "episode": i // 6, "step": i % 6}
            for i in range(n)]


def record_job(out: str) -> None:
    from robosteer.circuits.record import RecordConfig, record_heads
    from robosteer.models.tiny import tiny_vla

    vla = tiny_vla(seed=7, proprio_dim=7)
    record_heads(vla, record_frames(), RecordConfig(towers=("llm", "dino"), batch_size=2, keyframes_only=False),
                 progress=False, out=Path(out) / "acts")


def study_config(out: str, base: str):
    from robosteer.app.study import StudyConfig

    return StudyConfig(out_dir=out, policy=base, tasks=("lift/base",), methods=("heads-knn", "random-heads"),
                       seeds=(1,), demos=4, top_k=2, steps=10, batch_size=4, episodes=10,
                       retention_tasks=("push/base",), retention_episodes=6, workers=1)


def demo_frames(seed: int, episodes: int, size: int = 16) -> list[dict]:
    """Synthetic demonstrations: ``episodes`` episodes of 4 steps, keyframes at steps 0 and 2 and 3."""
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
             "instruction": ["lift the red cube", "lift the blue cube"][ep % 2],
             "action": np.concatenate([rng.uniform(-0.9, 0.9, 6), [float(step % 2)]]),
             "proprio": rng.uniform(-1, 1, 7), "episode": ep, "step": step, "keyframe": step != 1}
            for ep in range(episodes) for step in range(4)]


class FakeResult:
    """What ``measure_policy`` returns per task, enough of it for the study."""

    def __init__(self, successes: int, n: int) -> None:
        from robosteer.intervals import wilson_interval

        self.successes, self.n, self.success_rate = successes, n, successes / n
        self.ci95 = wilson_interval(successes, n)


def canonical_bytes(path: Path) -> bytes:
    """A file's bytes, except that a safetensors header is re-serialised with sorted keys: safetensors 0.8 writes
    the ``__metadata__`` entries in a random (per-process hash) order, so two identical adapters saved by two
    processes can differ in those bytes and only those."""
    data = Path(path).read_bytes()
    if not str(path).endswith(".safetensors"):
        return data
    n = int.from_bytes(data[:8], "little")
    return json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True).encode() + data[8 + n :]


def adapter_digest(policy: str) -> bytes:
    """sha256 over every file of the adapter a ``policy.json`` names (of the policy string for any other policy)."""
    h = hashlib.sha256(str(Path(policy).name).encode())
    if str(policy).endswith(".json"):
        spec = json.loads(Path(policy).read_text())
        adapter = (Path(policy).parent / spec["adapter"]).resolve()
        for path in sorted(adapter.rglob("*")):
            if path.is_file():
                h.update(path.name.encode() + canonical_bytes(path))
    return h.digest()


def study_job(out: str, base: str) -> None:
    import robosteer.app.experiment as experiment
    from robosteer.app.study import run_study

    def fake_collect(task, episodes, out, seed=0, workers=2, image_size=64, cameras=None):
        return demo_frames(seed, episodes)

    def fake_evaluate(policy, tasks, episodes, workers=2, **kw):
        digest = adapter_digest(str(policy))
        return {t: FakeResult(digest[i] % (episodes + 1), episodes) for i, t in enumerate(tasks)}

    real_config = experiment.steering_config

    def steering_config(*args, **kwargs):  # checkpoints every 3 steps, so a killed cell resumes mid-training
        return real_config(*args, **kwargs).replace(ckpt_every=3)

    experiment.collect_demos, experiment.evaluate_policy = fake_collect, fake_evaluate
    experiment.steering_config = steering_config
    run_study(study_config(out, base), progress=False)


def base_job(out: str) -> None:
    """The study's base policy: the training tests' tiny model, saved as a checkpoint folder."""
    from .train_helpers import tiny_train_vla

    tiny_train_vla().save_pretrained(out)


JOBS = {"train": train_job, "record": record_job, "study": study_job, "base": base_job}


# --- the pause inside an atomic write -----------------------------------------------------------------
def install_pause(spec: str, marker: Path) -> None:
    """Make the n-th ``os.fsync`` of a file whose path contains ``substring`` (``spec = "substring@n"``) cut the
    file to half, create ``marker`` and wait to be killed."""
    substring, _, nth = spec.rpartition("@")
    seen = [0]
    real_fsync = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if substring in path:
            seen[0] += 1
            if seen[0] == int(nth):
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                marker.write_text(path)
                time.sleep(600)
        return real_fsync(fd)

    os.fsync = fsync


# --- the fork server --------------------------------------------------------------------------------
def run_child(job: dict) -> None:
    """In the forked child: log to the job's file, run the job, exit without running the parent's handlers."""
    code = 1
    try:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if job.get("pause"):
            install_pause(job["pause"], Path(job["marker"]))
        JOBS[job["job"]](*job["args"])
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_job(job: dict) -> dict:
    """Fork a child for ``job``, kill it at ``kill_after`` seconds or when its pause marker appears; its fate."""
    marker = Path(job["marker"]) if job.get("pause") else None
    if marker is not None:
        marker.unlink(missing_ok=True)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        run_child(job)
    kill_at = None if job.get("kill_after") is None else start + float(job["kill_after"])
    limit = start + float(job.get("timeout", 300))
    sent, reason = None, None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        now = time.monotonic()
        if sent is None:
            reason = ("kill_after" if kill_at is not None and now >= kill_at else
                      "pause" if marker is not None and marker.exists() else "timeout" if now >= limit else None)
            if reason is not None:
                os.kill(pid, signal.SIGKILL)
                sent = now - start
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(status)
    return {"returncode": code, "killed": code == -signal.SIGKILL, "reason": reason, "kill_sent": sent,
            "seconds": time.monotonic() - start}


def serve() -> None:
    import torch

    import robosteer.app.study  # noqa: F401
    import robosteer.circuits.discover  # noqa: F401
    import robosteer.circuits.record  # noqa: F401
    import robosteer.train.loop  # noqa: F401
    import safetensors.torch  # noqa: F401

    try:
        import plotly.graph_objects  # noqa: F401  (the study's discovery draws a head-map)
    except ImportError:  # pragma: no cover - the viz extra is part of the test environment
        pass
    torch.set_num_threads(1)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run_job(json.loads(line))), flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve()
        return 0
    if not argv or argv[0] not in JOBS:
        print(f"usage: python -m tests.kill_worker serve | {' | '.join(JOBS)} ARGS", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    JOBS[argv[0]](*argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

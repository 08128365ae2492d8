"""Two CPU processes (gloo) match one process with the same global batch: DDP through ``accelerate launch``,
and FSDP (torch's, on CPU) including a resume from a checkpoint written by the sharded run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "train_ddp_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], out: Path, *worker_args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent.parent)}
    proc = subprocess.run([sys.executable, *args, str(WORKER), str(out), *worker_args], env=env, capture_output=True,
                          text=True, timeout=240)
    if proc.returncode:
        pytest.fail(f"training run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    launch([], out)
    return out


def assert_same_adapter(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    one, two = load_file(str(a / "final" / "adapter.safetensors")), load_file(str(b / "final" / "adapter.safetensors"))
    assert one.keys() == two.keys()
    assert sum(float(t.abs().sum()) for t in one.values()) > 0
    for key in one:
        # Reduction order differs between 1 and 2 processes; Adam divides by sqrt(v), so a gradient entry near zero
        # can turn rounding into a visible step. 2e-5 is 0.2% of one step (lr 1e-2).
        torch.testing.assert_close(two[key], one[key], rtol=1e-3, atol=2e-5)


def test_two_processes_ddp_match_one(tmp_path, single):
    # accelerate's --cpu with several processes needs mpirun; --multi_gpu runs torchrun, and robosteer's
    # Accelerator(cpu=True) on a machine without GPU turns that into a gloo multi-CPU job.
    launch(["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())],
           tmp_path / "ddp")
    assert_same_adapter(single, tmp_path / "ddp")
    rows = {name: [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
            for name, path in (("single", single), ("ddp", tmp_path / "ddp"))}
    assert [r["step"] for r in rows["ddp"]] == [1, 2, 3]
    for a, b in zip(rows["single"], rows["ddp"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step-0000003" / "state.json").read_text())
    assert state["processes"] == 2 and len(state["rng"]) == 2


def test_two_processes_fsdp_with_resume_match_one(tmp_path, single):
    run = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]  # torchrun binds a free port
    launch(run, tmp_path / "fsdp", "--fsdp", "--stop-after", "2")
    assert (tmp_path / "fsdp" / "checkpoints" / "step-0000002").is_dir() and not (tmp_path / "fsdp" / "final").exists()
    launch(run, tmp_path / "fsdp", "--fsdp")
    assert_same_adapter(single, tmp_path / "fsdp")

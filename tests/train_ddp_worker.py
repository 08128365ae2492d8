"""Worker for the multi-process tests: the same script runs alone, under ``accelerate launch`` (DDP),
or under ``torch.distributed.run`` with FSDP.

    python tests/train_ddp_worker.py OUT
    accelerate launch --multi_gpu --num_processes 2 tests/train_ddp_worker.py OUT
    python -m torch.distributed.run --nproc_per_node 2 tests/train_ddp_worker.py OUT --fsdp [--stop-after N]

accelerate offers FSDP only on GPUs, so ``--fsdp`` wraps the model with torch's FSDP (v1,
``use_orig_params=True``) on CPU/gloo through a minimal stand-in for the few ``Accelerator``
members the loop uses; the loop's FSDP code (gathering sharded state for checkpoints and the
final adapter, loading it back) is what runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_helpers import make_frames, tiny_train_vla  # noqa: E402


class CPUFSDPAccelerator:
    """The ``Accelerator`` surface ``train()`` uses, with torch FSDP on CPU (gloo)."""

    distributed_type = "DistributedType.FSDP"

    def __init__(self) -> None:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        self.num_processes, self.process_index = dist.get_world_size(), dist.get_rank()
        self.is_main_process = self.process_index == 0
        self.device = torch.device("cpu")

    def prepare(self, model, optimizer):
        from torch.distributed.fsdp import FullyShardedDataParallel

        self.model = FullyShardedDataParallel(model, use_orig_params=True, device_id=self.device)
        return self.model, optimizer

    def reduce(self, tensor, reduction="sum"):
        torch.distributed.all_reduce(tensor)
        return tensor

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return self.model.clip_grad_norm_(max_norm)

    def wait_for_everyone(self):
        torch.distributed.barrier()

    def unwrap_model(self, model):
        return model.module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--stop-after", type=int, default=None)
    args = parser.parse_args()
    from robosteer.masks import HeadMask
    from robosteer.train import TrainConfig, make_strategy, train

    vla = tiny_train_vla()
    mask = HeadMask.from_heads(["llm.L0H1", "llm.L1H3", "dino.L1H0"], vla.head_layout)
    config = TrainConfig(out_dir=args.out, steps=3, batch_size=4, lr=1e-2, log_every=1, ckpt_every=3, progress=False)
    try:
        train(vla, make_frames(10), make_strategy("heads", mask=mask, kv=True), config, stop_after=args.stop_after,
              accelerator=CPUFSDPAccelerator() if args.fsdp else None)
    finally:
        # a gloo group left to interpreter exit can abort a rank ("terminate called without an active exception")
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

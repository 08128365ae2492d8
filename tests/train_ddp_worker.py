"""Worker for the multi-process test: the same script runs alone or under ``accelerate launch``.

    python tests/train_ddp_worker.py OUT METHOD
    accelerate launch --cpu --num_processes 2 tests/train_ddp_worker.py OUT METHOD
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_helpers import make_frames, tiny_train_vla  # noqa: E402


def main(out: str, method: str) -> None:
    from robosteer.masks import HeadMask
    from robosteer.train import TrainConfig, make_strategy, train

    vla = tiny_train_vla()
    mask = HeadMask.from_heads(["llm.L0H1", "llm.L1H3", "dino.L1H0"], vla.head_layout)
    config = TrainConfig(out_dir=out, steps=3, batch_size=4, lr=1e-2, log_every=1, ckpt_every=3, progress=False)
    train(vla, make_frames(10), make_strategy(method, mask=mask, kv=True), config)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

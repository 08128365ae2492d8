"""Training: the loop shared by pretraining and finetuning, and the strategies that choose what trains.

- ``config.py``: ``TrainConfig`` and the learning-rate schedule;
- ``batches.py`` / ``augment.py`` / ``loss.py``: OpenVLA-style examples, image augmentation, the loss;
- ``loop.py``: ``train(vla, frames, strategy, config)`` (seeded, resumable, single- or multi-process);
- ``state.py``: checkpoints for exact resumption; ``metrics.py``: the JSONL/CSV log;
- ``strategies/``: ``full``, ``heads``, ``random-heads``, ``lora``;
- ``head_deltas.py``: per-head delta parameters; ``adapters.py``: adapter files.

Importing this package is cheap: torch-using parts load on first use of a name.

Usage::

    from robosteer.train import TrainConfig, make_strategy, train
    result = train(vla, frames, make_strategy("heads", mask=mask), TrainConfig(out_dir="runs/x", steps=100))
"""

from __future__ import annotations

from robosteer.lazy import lazy_exports

_LAZY = {
    "TrainConfig": "robosteer.train.config",
    "train": "robosteer.train.loop",
    "TrainResult": "robosteer.train.loop",
    "NonFiniteLossError": "robosteer.train.loop",
    "make_strategy": "robosteer.train.strategies",
    "LoraSettings": "robosteer.train.strategies",
    "BatchBuilder": "robosteer.train.batches",
    "AugmentConfig": "robosteer.train.augment_config",
    "HeadDeltas": "robosteer.train.head_deltas",
    "save_heads_adapter": "robosteer.train.adapters",
    "load_heads_adapter": "robosteer.train.adapters",
    "load_lora_adapter": "robosteer.train.adapters",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

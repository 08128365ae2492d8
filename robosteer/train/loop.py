"""The training loop shared by pretraining and finetuning; a strategy decides what trains.

``train(vla, frames, strategy, config)`` runs ``config.steps`` AdamW steps on the model
family's batches and loss (``objectives.py``: OpenVLA's sequences, pi0's flow matching),
single- or multi-process through ``accelerate`` (the same call works under ``accelerate launch``: each process takes its share of every
global batch and DDP averages the gradients). The loss is the token-mean over the global
batch, so N processes with batch B/N each compute what one process computes with B.

Determinism: the data order and each example's augmentation are functions of
``(seed, step, slot)``; initialisation is seeded; checkpoints (``state.py``) hold the
trainable weights, optimizer, scheduler and every RNG, so a resumed run is bit-exact
with an uninterrupted one (same number of processes). A non-finite loss or gradient
norm stops the run with :class:`NonFiniteLossError` before any weight changes; the
last good checkpoint stays on disk.

Outputs in ``config.out_dir``: ``checkpoints/step-*/``, ``metrics.jsonl``/``metrics.csv``
(``metrics.py``), and at the end ``final/`` in the strategy's format (heads adapter,
peft LoRA adapter, or a full checkpoint); with ``ema_decay`` the final output holds the
exponential moving average of the weights (``ema.py``), which the checkpoints keep too.

Usage::

    strategy = make_strategy("heads", mask=mask)
    result = train(vla, frames, strategy, TrainConfig(out_dir="runs/heads", steps=3000, batch_size=32))
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ..data.frames import Frame
from .batches import as_frames
from .config import TrainConfig, lr_factor
from .ema import WeightAverage
from .metrics import MetricsLog
from .objectives import training_objective
from .sampler import DataOrder
from .state import (capture_rng, checkpoint_dir, gather_state, latest_checkpoint, load_checkpoint, prune_checkpoints,
                    read_average, read_state, save_checkpoint)
from .strategies.base import Strategy, trainable_parameters

log = logging.getLogger(__name__)

# Settings a resumed run must share with the run that wrote the checkpoint (else it would not be the same run).
RESUME_KEYS = ("batch_size", "lr", "schedule", "warmup_steps", "min_lr_ratio", "betas", "weight_decay", "eps",
               "grad_clip", "seed", "augment", "augment_shift", "augment_crop_scale", "augment_hue", "label_smoothing",
               "unnorm_key", "ema_decay")


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss or the gradient norm was NaN or infinite."""


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    step: int  # optimizer steps done in total (including those before a resume)
    loss: float  # loss of the last step run (NaN if this call ran none)
    finished: bool  # True when ``step == config.steps`` and ``output`` was written
    out_dir: Path
    checkpoint: Path | None  # the newest checkpoint
    output: Path | None  # ``out_dir/final`` (adapter or model) when finished
    resumed_from: Path | None
    start_step: int = 0  # the step this call started from (> 0 after a resume)
    elapsed_s: float = 0.0  # training time of all ``step`` steps, including the time before a resume


def make_accelerator(config: TrainConfig):
    """An ``accelerate.Accelerator`` for this run (it picks up ``accelerate launch``'s environment).

    Without a GPU it is built with ``cpu=True``, which is what makes accelerate treat several
    launched processes as one multi-CPU (gloo) job rather than as independent runs.
    """
    try:
        from accelerate import Accelerator
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("training needs accelerate: pip install 'robosteer[train]'") from err
    return Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())


def seed_everything(seed: int) -> None:
    """``seed_everything(0)``: seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(vla: nn.Module, frames: Iterable[Frame | Mapping[str, Any]], strategy: Strategy, config: TrainConfig, *,
          stop_after: int | None = None, accelerator: Any = None, auxiliary: Any = None) -> TrainResult:
    """``train(vla, frames, strategy, config)`` -> :class:`TrainResult`; ``vla`` is modified in place.

    ``frames``: a dataset or sequence of ``robosteer.data.frames.Frame`` (or mappings with its fields),
    read lazily; each is made a ``Frame`` when its batch is built.
    ``stop_after`` ends this call after that many total steps (writing a checkpoint there),
    e.g. for time-sliced jobs; a later call with ``config.resume`` continues the same run.
    ``auxiliary`` (optional) is a callable ``auxiliary(frames, batch) -> scalar loss`` (the local ``Frame`` objects
    and their ``ModelBatch``) evaluated
    after each forward pass and added to the action loss (e.g. ``pretrain``'s state targets,
    whose parameters live in a submodule of ``vla`` so they train and checkpoint with it);
    its value is logged as ``aux_loss``.
    """
    frames = as_frames(frames)
    accelerator = accelerator or make_accelerator(config)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {world} processes")
    out = Path(config.out_dir)
    ckpt_root = out / "checkpoints"

    seed_everything(config.seed)
    base_fingerprint = vla.fingerprint()
    strategy.prepare(vla)
    params = [p for _, p in trainable_parameters(vla)]
    if not params:
        raise ValueError(f"strategy {strategy.name!r} left no trainable parameters")
    n_trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s))
    objective = training_objective(vla, config)
    order = DataOrder(len(frames), config.seed)

    names = [name for name, _ in trainable_parameters(vla)]
    ema = None
    if config.ema_decay:
        if str(accelerator.distributed_type).endswith("FSDP"):
            raise ValueError("TrainConfig.ema_decay is not supported with FSDP (each process would average its shard)")
        ema = WeightAverage(trainable_parameters(vla), config.ema_decay)
    model, prepared_optimizer = accelerator.prepare(vla, optimizer)
    start, elapsed_before, resumed_from = 0, 0.0, None
    latest = latest_checkpoint(ckpt_root) if config.resume else None
    if latest is not None:
        _check_resume(read_state(latest), config, strategy, base_fingerprint, len(frames), world, latest)
        meta = load_checkpoint(latest, model=model, optimizer=optimizer, scheduler=scheduler, trainable=names,
                               rank=rank)
        start, elapsed_before, resumed_from = int(meta["step"]), float(meta["elapsed_s"]), latest
        if ema is not None:
            ema.load(read_average(latest), str(latest))
        log.info("resuming from %s (step %d)", latest, start)
    metrics = MetricsLog(out)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        metrics.truncate(after_step=start)
    log.info("training %s: %d trainable parameters, %d frames, %d steps of %d on %d process(es)", strategy.name,
             n_trainable, len(frames), config.steps, config.batch_size, world)

    model.train()
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    local = config.batch_size // world
    loss_value, step, last_ckpt = math.nan, start, resumed_from
    t_start = time.perf_counter()
    elapsed = elapsed_before
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=start, desc=f"train {strategy.name}", unit="step",
               disable=not (config.progress and accelerator.is_main_process))
    try:
        for step in range(start + 1, end + 1):
            t0 = time.perf_counter()
            global_frames = [Frame.coerce(frames[i], f"frame {i}") for i in order.batch(step - 1, config.batch_size)]
            local_frames = global_frames[rank * local:(rank + 1) * local]
            batch = objective.collate(local_frames,
                                      seeds=[(config.seed, step, rank * local + j) for j in range(local)],
                                      pad_to=max(objective.length(f) for f in global_frames)).to(accelerator.device)
            loss_sum, n_loss, n_sequence = objective.loss(model, batch)  # summed over the local batch
            counts = torch.tensor([float(n_loss), float(n_sequence)], device=accelerator.device)
            totals = accelerator.reduce(torch.cat([counts, loss_sum.detach().float()[None]]), reduction="sum")
            n_tokens, n_seq_tokens, total_loss = totals.tolist()
            loss_value = total_loss / n_tokens
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(_stop_message("loss", loss_value, step, last_ckpt))
            total = loss_sum * world / n_tokens
            aux_value = None
            if auxiliary is not None:
                aux = auxiliary(local_frames, batch)
                aux_value = float(accelerator.reduce(aux.detach().float()[None], reduction="mean"))
                if not math.isfinite(aux_value):
                    raise NonFiniteLossError(_stop_message("auxiliary loss", aux_value, step, last_ckpt))
                total = total + aux
            accelerator.backward(total)
            grad_norm = float(accelerator.clip_grad_norm_(params, config.grad_clip or math.inf))
            if not math.isfinite(grad_norm):
                raise NonFiniteLossError(_stop_message("gradient norm", grad_norm, step, last_ckpt))
            lr = optimizer.param_groups[0]["lr"]
            prepared_optimizer.step()
            scheduler.step()
            prepared_optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(step)
            elapsed = elapsed_before + time.perf_counter() - t_start
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
            if accelerator.is_main_process and (step % config.log_every == 0 or step == config.steps):
                metrics.write({"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                               "tokens_per_s": n_seq_tokens / max(time.perf_counter() - t0, 1e-9),
                               "elapsed_s": elapsed, **({} if aux_value is None else {"aux_loss": aux_value})})
            if step % config.ckpt_every == 0 or step == end:
                last_ckpt = _checkpoint(accelerator, model, optimizer, scheduler, ckpt_root, step, config, strategy,
                                        base_fingerprint, order, len(frames), elapsed, ema)
    finally:
        bar.close()
        model.eval()

    output = None
    if step >= config.steps:
        output = out / "final"
        with (ema.applied() if ema is not None else contextlib.nullcontext()), full_parameters(accelerator, model):
            if accelerator.is_main_process:
                strategy.save(accelerator.unwrap_model(model), output)
        accelerator.wait_for_everyone()
    return TrainResult(step=step, loss=loss_value, finished=output is not None, out_dir=out, checkpoint=last_ckpt,
                       output=output, resumed_from=resumed_from, start_step=start, elapsed_s=elapsed)


def _stop_message(what: str, value: float, step: int, last_ckpt: Path | None) -> str:
    kept = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint had been written yet"
    return (f"non-finite {what} ({value}) at step {step}: training stopped before updating any weight; {kept}. "
            "Lower the learning rate or check the data.")


def full_parameters(accelerator, model):
    """A context in which an FSDP-wrapped model holds its full (unsharded) parameters on rank 0; a no-op otherwise."""
    if str(accelerator.distributed_type).endswith("FSDP"):
        from torch.distributed.fsdp import FullyShardedDataParallel

        on_gpu = accelerator.device.type == "cuda"  # offloading to CPU from CPU crashes torch 2.13's FSDP
        return FullyShardedDataParallel.summon_full_params(model, writeback=False, rank0_only=on_gpu,
                                                           offload_to_cpu=on_gpu)
    return contextlib.nullcontext()


def _checkpoint(accelerator, model, optimizer, scheduler, root: Path, step: int, config: TrainConfig,
                strategy: Strategy, base_fingerprint: str, order: DataOrder, n_frames: int, elapsed: float,
                ema: WeightAverage | None = None) -> Path:
    weights, optimizer_state = gather_state(model, optimizer)
    rng = [capture_rng()]
    if accelerator.num_processes > 1:
        gathered: list[Any] = [None] * accelerator.num_processes
        torch.distributed.all_gather_object(gathered, rng[0])
        rng = gathered
    path = checkpoint_dir(root, step)
    if accelerator.is_main_process:
        save_checkpoint(path, step=step, weights=weights, optimizer_state=optimizer_state, scheduler=scheduler,
                        rng=rng, extra={"strategy": strategy.describe(), "base_fingerprint": base_fingerprint,
                               "n_frames": n_frames, "processes": accelerator.num_processes, "elapsed_s": elapsed,
                               "data_position": order.position(step, config.batch_size),
                               "config": config.to_dict()},
                        average=None if ema is None else ema.state())
        prune_checkpoints(root, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    return path


def _check_resume(meta: dict, config: TrainConfig, strategy: Strategy, fingerprint: str, n_frames: int, world: int,
                  path: Path) -> None:
    problems = []
    if meta["base_fingerprint"] != fingerprint:
        problems.append(f"base model {meta['base_fingerprint']} vs {fingerprint}")
    if meta["strategy"] != strategy.describe():
        problems.append(f"strategy {meta['strategy']} vs {strategy.describe()}")
    if meta["n_frames"] != n_frames:
        problems.append(f"{meta['n_frames']} frames vs {n_frames}")
    if meta["processes"] != world:
        problems.append(f"{meta['processes']} processes vs {world}")
    saved = meta["config"]
    problems += [f"{k}={saved[k]!r} vs {v!r}" for k, v in config.to_dict().items() if k in RESUME_KEYS and saved.get(k, v) != v]
    if problems:
        raise ValueError(f"cannot resume from {path}: this run differs from the one that wrote it ("
                         + "; ".join(problems) + "). Use another out_dir or resume=False.")
    if saved["steps"] != config.steps:
        log.warning("resuming with steps=%d (the checkpoint's run had %d); the schedule changes", config.steps,
                    saved["steps"])

"""Pretraining robosteer's default policy from scratch on its own expert demonstrations.

One call does everything: the scripted experts collect the pretraining split's tasks
(clean episodes, plus episodes whose executed actions carry noise while the recorded
labels stay clean, so the policy sees and learns to correct small mistakes), then the
default-shape OpenVLA-architecture model trains on all of it with the full strategy.
Collection is skipped for a demo folder that is already complete, and training resumes
from the newest checkpoint, so an interrupted run continues where it stopped. With
``choose_last`` the shipped policy is the best of the newest checkpoints by closed-loop success on
validation seeds (``checkpoint_choice.py``), written to ``chosen/``.

The training settings are ``TrainConfig``'s: ``PretrainConfig`` names the ones ``robosteer pretrain``
exposes (``TRAINING_FIELDS``, under TrainConfig's own names, with the recipe's defaults), ``RECIPE``
fixes the rest, and ``PretrainConfig.train_config()`` is the one ``TrainConfig`` that pretraining
runs (validated when the ``PretrainConfig`` is made, so a bad setting fails before the collection).

Usage::

    path = pretrain(PretrainConfig(out_dir="runs/default-policy"))   # -> runs/default-policy/final
    PretrainConfig(out_dir="runs/x", steps=100, warmup_steps=10).train_config()   # the run's TrainConfig
    robosteer pretrain --out runs/default-policy
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robosteer.config_cli import field_default
from robosteer.sim.cameras import VIEWS
from robosteer.train.config import TrainConfig

log = logging.getLogger(__name__)

# the TrainConfig settings that PretrainConfig (and `robosteer pretrain`) expose, under the same names
TRAINING_FIELDS: tuple[str, ...] = ("steps", "batch_size", "lr", "warmup_steps", "label_smoothing", "augment",
                                    "augment_shift", "ema_decay", "ckpt_every", "seed", "progress")
# the rest of the default policy's TrainConfig (out_dir and unnorm_key: the run's folder and the demos' statistics)
RECIPE: dict[str, Any] = {"schedule": "cosine", "min_lr_ratio": 0.05, "betas": (0.9, 0.95), "weight_decay": 0.01,
                          "augment_crop_scale": 1.0, "augment_hue": 0.0, "log_every": 50}


@dataclass(frozen=True)
class PretrainConfig:
    """The default policy's pretraining recipe; each field's help is also ``robosteer pretrain``'s.

    From ``steps`` on (but ``aux_weight``) the fields are ``TrainConfig`` settings (``TRAINING_FIELDS``): their
    defaults are the recipe's, where it differs from ``TrainConfig``'s, and ``TrainConfig`` checks them.
    """

    out_dir: str = field(metadata={"help": "output folder: demos/, checkpoints, metrics, final/"})
    split: str = field(default="default", metadata={"help": "the sim split whose pretraining tasks are learned"})
    episodes: int = field(default=250, metadata={"help": "clean expert episodes per pretraining task (seeds 0 ..)"})
    noisy_episodes: int = field(default=100, metadata={
        "help": "episodes per task with executed-action noise (the next seeds); their labels stay clean"})
    action_noise: float = field(default=0.1, metadata={
        "help": "std of the noise on executed arm actions (0.2 makes the expert fail 93% of place)"})
    start_jitter: float = field(default=0.1, metadata={
        "help": "random start offset of the gripper in metres before each recorded episode (0: the fixed start); "
                "against the copycat shortcut of reading the step from proprio"})
    counterfactual: bool = field(default=True, metadata={"help":
        "also record every clean scene with its distractor named instead of the target (demos/counterfactual/): "
        "the same images under two instructions, so only the colour word tells the trajectories apart"})
    init_from: str | None = field(default=None, metadata={"help":
        "start from this policy folder's weights instead of a random initialisation (same model shape; the "
        "action statistics are this run's)"})
    image_size: int = field(default=64, metadata={"help": "square agentview image side in pixels"})
    workers: int = field(default=2, metadata={"help": "collection processes"})
    steps: int = field(default=8000, metadata={
        "help": "optimizer steps (the shipped policy's recipe: ~2 h on 2 CPU cores)"})
    batch_size: int = field(default=32, metadata={"help": "global batch"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate (cosine schedule)"})
    warmup_steps: int = field(default=500, metadata={"help": "linear warm-up steps"})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Gaussian credit to neighbouring action bins (sigma in bins; v1's token recipe: 1)"})
    augment: bool = field(default=field_default(TrainConfig, "augment"), metadata={
        "help": "brightness/contrast/saturation jitter; no crop and no hue shift (positions and colours matter)"})
    augment_shift: int = field(default=field_default(TrainConfig, "augment_shift"), metadata={
        "help": "random image translation of up to this many pixels (0: off; 2 with 2.4x the data did worse)"})
    action_head: str = field(default="l1-regression", metadata={"choices": ("tokens", "l1-regression"), "help":
        "the policy's actions: 256-bin tokens (v1), or continuous through OpenVLA-OFT's L1 regression head "
        "(the default; tokens want --no-film --label-smoothing 1)"})
    action_chunk: int = field(default=1, metadata={
        "help": "actions per forward pass, decoded in parallel (> 1 needs --action-head l1-regression)"})
    film: bool = field(default=True, metadata={"help":
        "condition the vision towers on the instruction with OpenVLA-OFT+'s FiLM, so patch features can single out "
        "the named object (needs --action-head l1-regression)"})
    cameras: tuple[str, ...] | None = field(default=("agentview", "wrist"), metadata={"choices": VIEWS, "help":
        "camera views the demos record and the policy reads, in order (agentview alone: --cameras agentview)"})
    aux_weight: float = field(default=1.0, metadata={
        "help": "weight of the auxiliary object/goal position targets (train/auxiliary.py) from privileged demo "
                "state (0: behaviour cloning only)"})
    ema_decay: float = field(default=0.999, metadata={
        "help": "exponential moving average of the weights, shipped as the policy (0: off; e.g. 0.999)"})
    ckpt_every: int = field(default=500, metadata={"help": "optimizer steps between checkpoints"})
    choose_last: int = field(default=3, metadata={
        "help": "ship the best of the newest N checkpoints by closed-loop success on validation seeds "
                "(3,000,000 +; 0: ship the final weights)"})
    validation_episodes: int = field(default=10, metadata={
        "help": "validation episodes per task and checkpoint for --choose-last"})
    seed: int = field(default=field_default(TrainConfig, "seed"), metadata={
        "help": "seeds the model's initialisation, the data order and the augmentation"})
    progress: bool = field(default=field_default(TrainConfig, "progress"), metadata={"help": "the tqdm progress bar"})

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.noisy_episodes < 0:
            raise ValueError("episodes must be >= 1 and noisy_episodes >= 0")
        if self.choose_last < 0 or self.validation_episodes < 1:
            raise ValueError(f"PretrainConfig.choose_last must be >= 0 (got {self.choose_last}) and "
                             f"validation_episodes >= 1 (got {self.validation_episodes})")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")
        if self.action_head != "tokens" and self.label_smoothing:
            raise ValueError(f"PretrainConfig.label_smoothing={self.label_smoothing} smooths action tokens; with "
                             f"action_head={self.action_head!r} set it to 0 (--label-smoothing 0)")
        if self.action_chunk < 1 or (self.action_chunk > 1 and self.action_head == "tokens"):
            raise ValueError(f"PretrainConfig.action_chunk={self.action_chunk}: chunks of more than one action need "
                             "action_head='l1-regression' (and the chunk must be >= 1)")
        if self.film and self.action_head == "tokens":
            raise ValueError("PretrainConfig.film needs action_head='l1-regression' (--action-head l1-regression)")
        object.__setattr__(self, "cameras", self.collect_cameras())  # canonical: None for the agentview alone
        self.train_config()  # TrainConfig checks the training settings here: before the collection, not after

    def collect_cameras(self) -> tuple[str, ...] | None:
        """The demos' cameras as ``CollectConfig`` records them (None: the agentview alone)."""
        from robosteer.sim.collect_config import CollectConfig

        return CollectConfig(tasks=("lift/base",), cameras=self.cameras).cameras

    def model_changes(self) -> dict[str, Any]:
        """The ``VLAConfig`` fields this recipe changes from the default shape (OpenVLA-OFT's switches)."""
        changes: dict[str, Any] = {}
        if self.cameras:
            changes["n_views"] = len(self.cameras)
        if self.action_head != "tokens":
            changes.update(action_head=self.action_head, action_chunk=self.action_chunk)
        if self.film:
            changes["use_film"] = True
        return changes

    def train_config(self) -> TrainConfig:
        """The ``TrainConfig`` of the pretraining run: ``TRAINING_FIELDS`` from here, the rest from ``RECIPE``."""
        from robosteer.data.demo_format import DATASET_NAME

        return TrainConfig(out_dir=str(self.out_dir), unnorm_key=DATASET_NAME, **RECIPE,
                           keep_checkpoints=max(1, self.choose_last),
                           **{name: getattr(self, name) for name in TRAINING_FIELDS})


def _collect(tasks, episodes: int, seed: int, noise: float, out: Path, config: PretrainConfig,
             counterfactual: bool = False):
    from robosteer.sim.collect import CollectConfig, collect
    from robosteer.data.dataset import DemoDataset

    if (out / "meta.json").is_file():
        log.info("using the demonstrations already in %s", out)
        return DemoDataset(out)
    report = collect(CollectConfig(tasks=tuple(str(t) for t in tasks), episodes=episodes, seed=seed,
                                   workers=config.workers, image_size=config.image_size, action_noise=noise,
                                   cameras=config.cameras, start_jitter=config.start_jitter,
                                   counterfactual=counterfactual), out)
    log.info("collected %s:\n%s", out, report.summary())
    return DemoDataset(out)


def _load_initial_weights(vla, path: str) -> None:
    """Copy the weights of the policy in ``path`` into ``vla`` (built for this run: same shape, new statistics)."""
    from robosteer.models.loading import load_vla

    start = load_vla(path, load_tokenizer=False)
    theirs, ours = start.config.replace(norm_stats=vla.config.norm_stats), vla.config
    differ = [k for k in ours.__dataclass_fields__ if k != "torch_dtype" and getattr(theirs, k) != getattr(ours, k)]
    if differ:
        raise ValueError(f"PretrainConfig.init_from={path!r}: that policy's shape differs from this run's in "
                         f"{differ} (config.json there: {[getattr(theirs, k) for k in differ]}, here: "
                         f"{[getattr(ours, k) for k in differ]})")
    vla.load_state_dict(start.state_dict())
    log.info("initial weights from %s", path)


def pretraining_data(config: PretrainConfig):
    """Collect (or reopen) the clean and noisy demonstrations; returns the combined frames."""
    from robosteer.data.frames import ConcatFrames
    from robosteer.sim.tasks import get_split

    tasks = get_split(config.split).pretrain
    root = Path(config.out_dir) / "demos"
    parts = [_collect(tasks, config.episodes, 0, 0.0, root / "clean", config)]
    if config.noisy_episodes:
        parts.append(_collect(tasks, config.noisy_episodes, config.episodes, config.action_noise, root / "noisy", config))
    if config.counterfactual:  # the clean seeds again, each with the other cube named
        parts.append(_collect(tasks, config.episodes, 0, 0.0, root / "counterfactual", config, counterfactual=True))
    return ConcatFrames(parts)


def combined_statistics(frames, name: str) -> dict:
    """OpenVLA ``dataset_statistics`` of all frames together."""
    import numpy as np

    from robosteer.data.statistics import dataset_statistics

    return dataset_statistics(name, np.asarray(frames.actions), np.asarray(frames.proprio),
                              num_trajectories=int(np.unique(frames.episode_index).size))


def pretrain(config: PretrainConfig) -> Path:
    """Collect, build the default-shape model and train it; returns the folder of the final policy."""
    import numpy as np

    from robosteer.models.default import default_config
    from robosteer.models.loading import build_vla_from_config
    from robosteer.data.demo_format import DATASET_NAME
    from robosteer.files import write_json_atomic
    from robosteer.train.loop import train
    from robosteer.train.auxiliary import FullWithoutReadout, StateTargets
    from robosteer.train.strategies import FullStrategy

    frames = pretraining_data(config)
    stats = combined_statistics(frames, DATASET_NAME)
    cfg, tok = default_config(stats)
    if config.model_changes():
        cfg = cfg.replace(**config.model_changes())  # VLAConfig validates them (e.g. a chunk needs the L1 head)
    vla = build_vla_from_config(cfg, tokenizer=tok, seed=config.seed)
    if config.init_from:
        _load_initial_weights(vla, config.init_from)
    if config.action_chunk > 1:  # each frame's next K actions
        from robosteer.data.chunks import ActionChunks

        frames = ActionChunks(frames, config.action_chunk)
    log.info("default policy: %.2fM parameters, %d frames from %d episodes",
             sum(p.numel() for p in vla.parameters()) / 1e6, len(frames), int(np.unique(frames.episode_index).size))
    write_json_atomic(Path(config.out_dir) / "pretrain_config.json", asdict(config))
    train_cfg = config.train_config()
    if config.aux_weight > 0:
        with StateTargets.attached(vla, config.aux_weight, config.seed) as aux:
            result = train(vla, frames, FullWithoutReadout(), train_cfg, auxiliary=aux)
        StateTargets.detach(vla)
    else:
        result = train(vla, frames, FullStrategy(), train_cfg)
    log.info("pretraining finished at step %d (loss %.4f): %s", result.step, result.loss, result.output)
    if not config.choose_last:
        return Path(result.output)
    from robosteer.app.checkpoint_choice import choose_checkpoint
    from robosteer.sim.env import SimConfig
    from robosteer.sim.tasks import get_split

    sim = SimConfig(image_size=config.image_size, **({"cameras": config.cameras} if config.cameras else {}))
    chosen, table = choose_checkpoint(Path(config.out_dir) / "checkpoints", Path(result.output),
                                      [str(t) for t in get_split(config.split).pretrain], out=Path(config.out_dir) / "chosen",
                                      last=config.choose_last, episodes=config.validation_episodes,
                                      workers=config.workers, sim_config=sim)
    log.info("shipped checkpoint: %s", chosen)
    return chosen

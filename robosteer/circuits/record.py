"""Recording every head's output over demonstrations, for the head scorers.

For each frame (``robosteer.data.frames.Frame``, or a mapping with its fields: image,
instruction, action, optional proprio) the policy runs teacher-forced on the OpenVLA
sequence of the prompt then the demonstrated action's tokens (no EOS;
``models.sequence.SequenceBuilder``, which also says where each token sits), and each
head's ``hook_z`` is kept at one position:

- LLM heads: ``"last_prompt"`` (the position that predicts the first action token),
  ``"first_action"`` (the first action token, as the released Robotic Steering loader
  does), or ``"mean_action"`` (mean over the action-token positions);
- vision heads: the mean over the tower's patch tokens (they see no text).

pi0 (``circuits.pi0``), as the released code records it: the chunk is sampled from a fixed noise, then
one velocity call at t = 0 on it; expert heads are read at ``position`` over the suffix (the first action
token by default), VLM heads at the last valid prefix token, SigLIP heads as the mean over patches and
real cameras; the target is the first action.

Frames are taken at keyframes by default (``keyframe`` flag of a frame: gripper flips,
near-still arm, first/last frame), or all frames. ``out=DIR`` streams each batch to
disk as it is recorded (``record_stream``: memory bounded by one batch, the folder
appears only when complete) and returns the recording memory-mapped from there.

Usage::

    acts = record_heads(vla, frames, RecordConfig(towers=("llm",), position="first_action"))
    scores = acts.knn_scores()
    acts.save("runs/acts"); again = HeadActivations.load("runs/acts")
    big = record_heads(vla, frames, out="runs/acts-big")  # streamed; same object, memory-mapped
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..config_cli import field_default
from ..data.frames import Frame
from ..models.sequence import ModelBatch, SequenceBuilder
from ..sites import Head, HeadLayout, HookSite, hook_name
from .config import POSITIONS, DiscoverConfig
from .pi0 import first_actions, is_pi0, recording_inputs
from .pi0 import pick as pi0_pick
from .record_stream import FORMAT_VERSION, STORAGE, HeadActivationsWriter, read_streamed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordConfig:
    """What to record; ``towers``, ``position`` and ``keyframes_only`` default to discovery's (``DiscoverConfig``)."""

    towers: tuple[str, ...] = field_default(DiscoverConfig, "towers")  # which towers' heads to record
    position: str = field_default(DiscoverConfig, "position")  # LLM token position, one of POSITIONS
    # only frames flagged ``keyframe`` (all frames when none are flagged)
    keyframes_only: bool = field_default(DiscoverConfig, "keyframes_only")
    batch_size: int = 16
    unnorm_key: str | None = None  # dataset statistics used to tokenize the demonstrated action

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if not self.towers:
            raise ValueError("record at least one tower")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class HeadActivations:
    """Per-tower head outputs ``{tower: (N, L_active, H, D)}`` with the frames' actions and episodes."""

    acts: dict[str, torch.Tensor]
    actions: np.ndarray  # (N, A) raw (un-normalised) demonstrated actions
    episodes: np.ndarray  # (N,) int
    frames: np.ndarray  # (N,) int step index within the episode
    layout: HeadLayout
    position: str = "first_action"
    fingerprint: str | None = None
    instructions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def heads(self, tower: str) -> list[Head]:
        n_layers, n_heads = self.acts[tower].shape[1:3]
        return [Head(tower, layer, head) for layer in range(n_layers) for head in range(n_heads)]

    def flat(self, tower: str) -> torch.Tensor:
        """``(N, L_active * H, D)``, heads in ``self.heads(tower)`` order."""
        x = self.acts[tower]
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def knn_scores(self, config=None, probe: str | None = None):
        """kNN-regression scores of every recorded head (towers merged into one ``HeadScores``)."""
        from .knn import KNNConfig, knn_scores

        # One call over the {tower: (N, L, H, D)} dict: merging per-tower scores would repeat their columns.
        return knn_scores(dict(self.acts), self.actions, self.episodes, frames=self.frames, config=config or KNNConfig(),
                          probe=probe, layout=self.layout, fingerprint=self.fingerprint)

    # --- files ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """One safetensors file (activations + targets) and ``index.json`` (metadata), atomically."""
        from ..files import save_safetensors_atomic, write_json_atomic

        directory = Path(directory)
        tensors = {f"acts.{t}": x.contiguous() for t, x in self.acts.items()}
        tensors.update(actions=torch.from_numpy(np.ascontiguousarray(self.actions, dtype=np.float64)),
                       episodes=torch.from_numpy(self.episodes.astype(np.int64)),
                       frames=torch.from_numpy(self.frames.astype(np.int64)))
        save_safetensors_atomic(tensors, directory / "activations.safetensors")
        meta = {"format_version": FORMAT_VERSION, "layout": self.layout.to_dict(), "position": self.position,
                "fingerprint": self.fingerprint, "towers": list(self.acts), "instructions": self.instructions}
        write_json_atomic(directory / "index.json", meta, newline=False)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "HeadActivations":
        """``HeadActivations.load(dir)``: a folder of ``save`` or of a streamed recording (``record_heads(out=)``)."""
        from safetensors.torch import load_file

        from ..files import read_json

        directory = Path(directory)
        if not (directory / "index.json").is_file() and any(directory.glob("acts.*.npy")):
            raise ValueError(f"{directory} is an incomplete streamed recording (no index.json): the recording was "
                             "interrupted; record again")
        meta = read_json(directory / "index.json", "activation index")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}/index.json has format_version {meta.get('format_version')}; expected {FORMAT_VERSION}")
        if meta.get("storage") is not None:
            if meta["storage"] != STORAGE:
                raise ValueError(f"{directory}/index.json has unknown storage {meta['storage']!r}")
            return cls(**read_streamed(directory, meta))
        path = directory / "activations.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"activations not found: {path}")
        t = load_file(str(path))
        missing = [k for k in ("actions", "episodes", "frames") + tuple(f"acts.{x}" for x in meta["towers"]) if k not in t]
        if missing:
            raise ValueError(f"{path} lacks the field(s) {missing}")
        return cls(acts={x: t[f"acts.{x}"] for x in meta["towers"]}, actions=t["actions"].numpy(),
                   episodes=t["episodes"].numpy(), frames=t["frames"].numpy(),
                   layout=HeadLayout(meta["layout"]), position=meta["position"], fingerprint=meta.get("fingerprint"),
                   instructions=list(meta.get("instructions", [])))


def select_frames(frames: Sequence[Frame], keyframes_only: bool) -> list[Frame]:
    """Keyframes (``frame.keyframe`` true) or every frame when asked, or when none is flagged."""
    if not keyframes_only:
        return list(frames)
    keys = [f for f in frames if f.keyframe]
    if not keys:
        log.warning("no frame is flagged as a keyframe; recording all %d frames", len(frames))
        return list(frames)
    return keys


@torch.no_grad()
def record_heads(vla, frames: Sequence[Frame | Mapping[str, Any]], config: RecordConfig = RecordConfig(),
                 progress: bool = True, out: str | Path | None = None) -> HeadActivations:
    """``record_heads(vla, frames)`` -> ``HeadActivations`` at keyframes, for the configured towers and position.

    ``frames``: ``Frame`` objects (e.g. ``[dataset[i] for i in range(len(dataset))]``) or mappings with
    ``image`` (uint8 HxWx3), ``instruction``, ``action`` (raw A-dim), ``episode``, ``step`` (or ``frame``),
    optionally ``proprio`` and ``keyframe``. With ``out``, each batch is written to that folder as it is
    recorded (see ``record_stream``) and the result is loaded back memory-mapped.
    """
    from tqdm.auto import tqdm

    frames = [Frame.coerce(f, f"frame {i}") for i, f in enumerate(frames)]
    points = vla.hook_points()
    unknown = [t for t in config.towers if t not in points.towers]
    if unknown:
        raise ValueError(f"unknown tower(s) {unknown}; this model has {list(points.towers)}")
    chosen = select_frames(frames, config.keyframes_only)
    if not chosen:
        raise ValueError("no frames to record")
    names = [n for t in config.towers for n in vla.hook_names(["hook_z"], [t]) if points.head_active(HookSite.parse(n))]
    flow = is_pi0(vla)  # pi0: one velocity call per frame, read where circuits.pi0 says
    actions = first_actions(chosen) if flow else [np.asarray(f.action, dtype=np.float64) for f in chosen]
    targets = {"actions": np.stack(actions),
               "episodes": np.asarray([int(f.episode) for f in chosen]),
               "frames": np.asarray([i if f.step is None else int(f.step) for i, f in enumerate(chosen)])}
    meta = {"layout": vla.head_layout, "position": config.position, "fingerprint": vla.fingerprint(),
            "instructions": [str(f.instruction) for f in chosen]}
    builder = None if flow else SequenceBuilder(vla, config.unnorm_key)  # prompt + action tokens, no EOS
    per_tower: dict[str, list[torch.Tensor]] = {t: [] for t in config.towers}
    with contextlib.ExitStack() as stack:
        writer = None
        if out is not None:
            writer = stack.enter_context(HeadActivationsWriter(out, **targets, **meta))
        for start in tqdm(range(0, len(chosen), config.batch_size), disable=not progress, desc="recording heads"):
            part = chosen[start : start + config.batch_size]
            if flow:
                inputs = recording_inputs(vla, part)
                pick = lambda z, tower: pi0_pick(vla, z, tower, inputs["inputs"], config.position)  # noqa: E731
            else:
                seq = builder.build(part)
                inputs = seq.model_inputs()
                pick = lambda z, tower: _pick(z, tower, seq, config.position, vla)  # noqa: E731
            _, cache = vla.run_with_cache(**inputs, names_filter=names)
            batch = {}
            for tower in config.towers:
                layers = [HookSite.parse(n).layer for n in names if n.startswith(f"{tower}.")]
                z = torch.stack([cache[hook_name(tower, l, "hook_z")] for l in layers], dim=1)  # (B, L, S, H, D)
                batch[tower] = pick(z, tower).float()  # (B, L, H, D)
            if writer is not None:
                writer.append(batch)
            else:
                for tower, x in batch.items():
                    per_tower[tower].append(x)
    if out is not None:
        return HeadActivations.load(out)
    return HeadActivations(acts={t: torch.cat(v) for t, v in per_tower.items()}, **targets, **meta)


def _pick(z: torch.Tensor, tower: str, seq: ModelBatch, position: str, vla) -> torch.Tensor:
    """(B, L, S, H, D) -> (B, L, H, D) at the configured position."""
    if tower != "llm":
        n_prefix = next(t for t in vla.config.towers if t.kind == tower).n_prefix_tokens
        patches = z[:, :, n_prefix:].mean(dim=2)  # mean over the tower's patch tokens: (B * V, L, H, D)
        views = patches.shape[0] // len(seq)  # a tower sees each observation's V camera views (observation-major)
        return patches.reshape(len(seq), views, *patches.shape[1:]).mean(dim=1)  # mean over the views
    rows = torch.arange(z.shape[0])
    if position == "first_action":
        return z[rows, :, seq.first_action]
    if position == "last_prompt":
        return z[rows, :, seq.last_prompt]
    idx = seq.action_positions  # (B, K*A)
    return torch.stack([z[rows, :, idx[:, j]] for j in range(idx.shape[1])], dim=0).mean(0)

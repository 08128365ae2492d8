"""Recording every head's output over demonstrations, for the head scorers.

For each frame (image, instruction, action, optional proprio) the policy runs
teacher-forced on the OpenVLA training sequence (prompt, then the demonstrated
action's tokens), and each head's ``hook_z`` is kept at one position:

- LLM heads: ``"last_prompt"`` (the position that predicts the first action token),
  ``"first_action"`` (the first action token, as the released Robotic Steering loader
  does), or ``"mean_action"`` (mean over the action-token positions);
- vision heads: the mean over the tower's patch tokens (they see no text).

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
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..sites import Head, HeadLayout, HookSite, hook_name

log = logging.getLogger(__name__)

POSITIONS = ("last_prompt", "first_action", "mean_action")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RecordConfig:
    towers: tuple[str, ...] = ("llm",)  # which towers' heads to record
    position: str = "first_action"  # LLM token position, one of POSITIONS
    keyframes_only: bool = True  # only frames flagged ``keyframe`` (all frames when none are flagged)
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
        from ..files import atomic_write_text, save_safetensors_atomic

        directory = Path(directory)
        tensors = {f"acts.{t}": x.contiguous() for t, x in self.acts.items()}
        tensors.update(actions=torch.from_numpy(np.ascontiguousarray(self.actions, dtype=np.float64)),
                       episodes=torch.from_numpy(self.episodes.astype(np.int64)),
                       frames=torch.from_numpy(self.frames.astype(np.int64)))
        save_safetensors_atomic(tensors, directory / "activations.safetensors")
        meta = {"format_version": FORMAT_VERSION, "layout": self.layout.to_dict(), "position": self.position,
                "fingerprint": self.fingerprint, "towers": list(self.acts), "instructions": self.instructions}
        atomic_write_text(directory / "index.json", json.dumps(meta, indent=2))
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
            from .record_stream import STORAGE, load_streamed

            if meta["storage"] != STORAGE:
                raise ValueError(f"{directory}/index.json has unknown storage {meta['storage']!r}")
            return load_streamed(directory, meta)
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


def select_frames(frames: Sequence[Mapping[str, Any]], keyframes_only: bool) -> list[Mapping[str, Any]]:
    """Keyframes (``frame["keyframe"]`` true) or every frame when asked, or when none is flagged."""
    if not keyframes_only:
        return list(frames)
    keys = [f for f in frames if bool(f.get("keyframe", False))]
    if not keys:
        log.warning("no frame is flagged as a keyframe; recording all %d frames", len(frames))
        return list(frames)
    return keys


def teacher_forced_batch(vla, frames: Sequence[Mapping[str, Any]], unnorm_key: str | None = None) -> dict[str, Any]:
    """Prompt + demonstrated action tokens for a batch of frames, right-padded; plus index helpers."""
    from ..models.action_tokenizer import normalize

    stats = vla.norm_stats(unnorm_key)
    rows, prompt_lens = [], []
    for f in frames:
        prompt = vla.tokenize(f["instruction"])[0]
        action = normalize(np.asarray(f["action"], dtype=np.float64)[None], stats["action"])[0]
        tokens = torch.from_numpy(vla.action_tokenizer.encode(action))
        rows.append(torch.cat([prompt, tokens]))
        prompt_lens.append(prompt.shape[0])
    width = max(r.shape[0] for r in rows)
    ids = torch.full((len(rows), width), vla.config.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = 1
    batch = {"input_ids": ids, "attention_mask": mask,
             "pixel_values": vla.preprocess([np.asarray(f["image"]) for f in frames])}
    if vla.config.proprio_dim:
        batch["proprio"] = vla.normalize_proprio(np.stack([np.asarray(f["proprio"]) for f in frames]), unnorm_key)
    # position of text token i in the multimodal sequence is n_prefix - 1 + i
    first_action = torch.tensor(prompt_lens) + vla.n_prefix - 1
    return {"inputs": batch, "first_action": first_action, "n_action": len(stats["action"]["q01"])}


@torch.no_grad()
def record_heads(vla, frames: Sequence[Mapping[str, Any]], config: RecordConfig = RecordConfig(),
                 progress: bool = True, out: str | Path | None = None) -> HeadActivations:
    """``record_heads(vla, frames)`` -> ``HeadActivations`` at keyframes, for the configured towers and position.

    ``frames``: mappings with ``image`` (uint8 HxWx3), ``instruction``, ``action`` (raw A-dim), ``episode``,
    ``step`` (or ``frame``), optionally ``proprio`` and ``keyframe``. With ``out``, each batch is written to
    that folder as it is recorded (see ``record_stream``) and the result is loaded back memory-mapped.
    """
    from tqdm.auto import tqdm

    points = vla.hook_points()
    unknown = [t for t in config.towers if t not in points.towers]
    if unknown:
        raise ValueError(f"unknown tower(s) {unknown}; this model has {list(points.towers)}")
    chosen = select_frames(frames, config.keyframes_only)
    if not chosen:
        raise ValueError("no frames to record")
    names = [n for t in config.towers for n in vla.hook_names(["hook_z"], [t]) if points.active(HookSite.parse(n))]
    targets = {"actions": np.stack([np.asarray(f["action"], dtype=np.float64) for f in chosen]),
               "episodes": np.asarray([int(f.get("episode", 0)) for f in chosen]),
               "frames": np.asarray([int(f.get("step", f.get("frame", i))) for i, f in enumerate(chosen)])}
    meta = {"layout": vla.head_layout, "position": config.position, "fingerprint": vla.fingerprint(),
            "instructions": [str(f["instruction"]) for f in chosen]}
    per_tower: dict[str, list[torch.Tensor]] = {t: [] for t in config.towers}
    with contextlib.ExitStack() as stack:
        writer = None
        if out is not None:
            from .record_stream import HeadActivationsWriter

            writer = stack.enter_context(HeadActivationsWriter(out, **targets, **meta))
        for start in tqdm(range(0, len(chosen), config.batch_size), disable=not progress, desc="recording heads"):
            part = chosen[start : start + config.batch_size]
            tb = teacher_forced_batch(vla, part, config.unnorm_key)
            _, cache = vla.run_with_cache(**tb["inputs"], names_filter=names)
            batch = {}
            for tower in config.towers:
                layers = [HookSite.parse(n).layer for n in names if n.startswith(f"{tower}.")]
                z = torch.stack([cache[hook_name(tower, l, "hook_z")] for l in layers], dim=1)  # (B, L, S, H, D)
                batch[tower] = _pick(z, tower, tb, config.position, vla).float()  # (B, L, H, D)
            if writer is not None:
                writer.append(batch)
            else:
                for tower, x in batch.items():
                    per_tower[tower].append(x)
    if out is not None:
        return HeadActivations.load(out)
    return HeadActivations(acts={t: torch.cat(v) for t, v in per_tower.items()}, **targets, **meta)


def _pick(z: torch.Tensor, tower: str, tb: dict, position: str, vla) -> torch.Tensor:
    """(B, L, S, H, D) -> (B, L, H, D) at the configured position."""
    if tower != "llm":
        n_prefix = next(t for t in vla.config.towers if t.kind == tower).n_prefix_tokens
        return z[:, :, n_prefix:].mean(dim=2)  # mean over the tower's patch tokens
    rows = torch.arange(z.shape[0])
    first = tb["first_action"]
    if position == "first_action":
        return z[rows, :, first]
    if position == "last_prompt":
        return z[rows, :, first - 1]
    idx = first[:, None] + torch.arange(tb["n_action"])[None]  # (B, A) action-token positions
    return torch.stack([z[rows, :, idx[:, j]] for j in range(idx.shape[1])], dim=0).mean(0)

"""pi0 in the head scorers: one velocity call per frame, where each tower's heads are read, the probes' metric.

pi0 has no action tokens in its VLM: the VLM (``llm``) reads the prefix ``[camera patches | language]``
once, and the action expert (``expert``) reads ``[state token | chunk action tokens]`` once per flow step,
attending to the prefix's K/V. The recorders and the probes run **one velocity call** per frame, so every
site fires exactly once; the noise is a fixed chunk (``probe_noise``: seed ``NOISE_SEED``, the same for
every example, so both sides of a probe pair see the same noise).

Recording (kNN, ``record.record_heads``) follows the method's released code for pi0 (openpi_robotv
``models/pi0.py`` ``sample_actions(return_state_and_first_action_heads=True)``, read by
``head_tuning/knn/data.py`` as ``first_action_token_attn``): after sampling the chunk ``x_0``, one extra
suffix pass at flow time ``t = 0`` on ``x_0`` over the cached prefix; a head's value is its attention
output before the output projection. robosteer samples ``x_0`` from the fixed noise (``recording_inputs``)
and then makes that pass. Where each tower's heads are read:

- ``expert``: ``first_action`` (default) the first action token, suffix token 1, which is the released
  code's token; ``last_prompt`` the state token (its ``state_token_attn``); ``mean_action`` the mean
  over the chunk's action tokens;
- ``llm``: the **last valid prefix token** (the last real language token), whatever ``position`` says (the VLM
  has no action tokens; the release also keeps the prefill's VLM heads at the prefix's last position,
  ``last_token_attn``, a padding position when the prompt is shorter than the tokenizer length, and does
  not score them);
- ``siglip``: the mean over each camera's patches, then over the observation's real (non-empty) cameras.

The kNN target of a frame is its first demonstrated action (the first row of a chunk).

Probes (``probes.build_inputs`` / ``probes.probe_metric``) run the velocity at ``t = 1`` on the noise (the
sampler's first Euler step; at ``t = 0`` the one-step estimate would not depend on ``v``). A head acts at
**every position** of its tower (clean and corrupted prefixes have the same padded length; SigLIP's rows are
the observation's cameras), and the metric is minus the L1 distance, summed over the real action dimensions,
between the one-step estimate of the clean chunk ``x_t - t * v`` (``Pi0Output.denoised``) and the
demonstrated actions in model space (the rows a frame gives: one action, or a whole chunk). Patching every
expert head restores the clean metric exactly: the suffix's own inputs (state, noise, time) are the same in
both runs, and the prefix reaches it only through the expert's attention.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..data.frames import Frame

NOISE_SEED = 0


def is_pi0(vla: Any) -> bool:
    family = getattr(vla, "family", None)
    return getattr(family, "name", None) == "pi0"


def probe_noise(vla: Any, batch: int) -> torch.Tensor:
    """The fixed noise chunk ``[batch, chunk, max_action_dim]`` (one draw, repeated over the batch)."""
    return vla.noise_like(1, NOISE_SEED).expand(batch, -1, -1)


def one_step_inputs(vla: Any, frames: Sequence[Frame | Mapping[str, Any]]) -> dict[str, Any]:
    """Keyword arguments for ``vla(...)`` / ``run_with_cache``: the frames' inputs, the fixed noise as ``x_t``, t = 1."""
    from ..models.pi0.frames import frame_inputs

    inputs = frame_inputs(vla, frames)
    B = inputs.batch_size
    return {"inputs": inputs, "x_t": probe_noise(vla, B), "time": torch.ones(B, device=vla.device)}


def recording_inputs(vla: Any, frames: Sequence[Frame | Mapping[str, Any]]) -> dict[str, Any]:
    """The released recording pass: sample ``x_0`` from the fixed noise, then one velocity call at ``t = 0`` on it."""
    from ..models.pi0.frames import frame_inputs

    inputs = frame_inputs(vla, frames)
    B = inputs.batch_size
    with torch.no_grad():
        x_0 = vla.sample(inputs, probe_noise(vla, B))
    return {"inputs": inputs, "x_t": x_0, "time": torch.zeros(B, device=vla.device)}


def first_actions(frames: Sequence[Frame]) -> list:
    """Each frame's first demonstrated action (the first row of a chunk): the kNN targets."""
    import numpy as np

    return [np.asarray(f.action, dtype=np.float64).reshape(-1, np.shape(f.action)[-1])[0] for f in frames]


def pick(vla: Any, z: torch.Tensor, tower: str, inputs: Any, position: str) -> torch.Tensor:
    """``(B, L, S, H, D)`` (SigLIP: ``(B * n_views, L, S, H, D)``) -> ``(B, L, H, D)`` where the tower's heads are read."""
    B = inputs.batch_size
    if tower == "llm":
        valid = vla.prefix_mask(inputs)  # [B, P]
        last = valid.shape[1] - 1 - valid.flip(1).int().argmax(dim=1)  # the last True of each row
        return z[torch.arange(B), :, last]
    if tower == "expert":
        if position == "first_action":
            return z[:, :, 1]
        if position == "last_prompt":
            return z[:, :, 0]
        return z[:, :, 1:].mean(dim=2)
    patches = z.mean(dim=2)  # mean over each camera's patches: (B * C, L, H, D)
    per_camera = patches.reshape(B, -1, *patches.shape[1:])  # (B, C, L, H, D), observation-major
    real = torch.stack(inputs.image_masks, dim=1).to(per_camera.dtype)  # (B, C)
    weights = real / real.sum(dim=1, keepdim=True)
    return (per_camera * weights[:, :, None, None, None]).sum(dim=1)


def probe_inputs(vla: Any, frames: Sequence[Frame | Mapping[str, Any]]) -> dict[str, Any]:
    """``probes.build_inputs`` for pi0: one velocity call, no end positions (heads act everywhere), clean targets."""
    from ..models.pi0.frames import frame_actions

    frames = [Frame.coerce(f, f"frame {i}") for i, f in enumerate(frames)]
    return {"inputs": one_step_inputs(vla, frames), "end": None, "targets": frame_actions(vla, frames, rows_ok=True)}


def flow_metric(vla: Any, out: Any, targets: torch.Tensor) -> torch.Tensor:
    """Minus the L1 distance of the one-step estimate from the clean rows, over the real action dims: ``(B,)``."""
    rows, dims = targets.shape[1], vla.config.action_dim
    estimate = out.denoised[:, :rows, :dims].float()
    return -(estimate - targets[:, :, :dims].to(estimate.device).float()).abs().sum(dim=(1, 2))

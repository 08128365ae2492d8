"""Causal-mediation head scores: the release's ``cma`` selector, from predictions with one head replaced.

The release (openpi_robotv ``CMA_selection.py``) scores head h by the rise in action MSE
when h's output at one token position (the first action token) is replaced by its mean
over a *baseline* data set, everything else left as it is:

    cma_h = mean_n,a (ablated_h[n, a] - y[n, a])^2  -  mean_n,a (baseline[n, a] - y[n, a])^2

where ``baseline`` are the policy's own predictions without intervention (the release
reads them from the recording, ``predicted_action_label``) and ``ablated_h`` those with
head h replaced (the first action of the predicted chunk). Higher is more important; the
release sorts (cma, layer, head) descending, so on a tie the later head comes first,
whereas ``HeadScores.top`` puts the earlier first.

Two layers:

- the plain-array definitions: ``baseline_means`` gives the replacement values from
  recorded activations, ``cma_scores`` the scores from predictions;
- ``cma_head_scores(vla, frames)``, the model-forward loop that ``discover(method="cma")`` runs:
  each head's mean ``hook_z`` at the first action token over the baseline frames
  (``record.record_heads``, teacher-forced on the demonstrated actions), then the policy's
  greedy predictions with and without each head replaced there (``interventions.head_slice_hooks``).
  A token model decodes its action tokens with a KV cache; the prefix (images and prompt)
  runs once per frame batch, unablated, since the first action token cannot change what
  comes before it (so the first action dimension never changes either), and every head of
  a chunk continues from a copy of that cache with its own rows. An action-chunk model
  (L1 regression head, parallel decoding) runs one pass per frame batch and head chunk with
  the head replaced at the first action slot, and its prediction is the chunk's first
  action. Predictions and ``y`` (each frame's first demonstrated action) are raw,
  un-normalised actions.

Usage::

    scores = cma_head_scores(vla, frames)                       # every active LLM head
    scores = cma_scores(actions, baseline, {head: ablated})      # from predictions made elsewhere
    HeadMask.select(scores, k=8, column="cma")
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from robosteer.circuits.scores import HeadScores
from robosteer.sites import Head, HeadLayout, hook_name

log = logging.getLogger(__name__)


def baseline_means(acts) -> np.ndarray | dict[str, np.ndarray]:
    """``baseline_means(acts)``: each head's mean output over the baseline frames, (N, L, H, D) -> (L, H, D).

    A ``{tower: (N, L, H, D)}`` dict gives ``{tower: (L, H, D)}``.
    """
    if isinstance(acts, Mapping):
        return {tower: baseline_means(x) for tower, x in acts.items()}
    x = acts.detach().cpu().double().numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts, np.float64)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"acts must be (N, layers, heads, d) with N >= 1, got shape {x.shape}")
    return x.mean(axis=0)


def cma_scores(actions, baseline_predictions, ablated_predictions, heads: Sequence[Head | str] | None = None, *,
               layout: HeadLayout | None = None, fingerprint: str | None = None, data: str = "") -> HeadScores:
    """``cma_scores(actions, baseline, {head: ablated})`` -> ``HeadScores`` with ``cma`` and ``cma/mse``.

    ``actions`` and ``baseline_predictions`` (N, A); ``ablated_predictions`` (H, N, A) with
    ``heads`` naming H, or a mapping ``{head: (N, A)}``. ``cma`` is the rise in MSE (higher is
    more important), ``cma/mse`` the MSE with the head replaced.
    """
    y = _matrix(actions, "actions")
    base = _matrix(baseline_predictions, "baseline_predictions")
    if base.shape != y.shape:
        raise ValueError(f"baseline_predictions must have the shape of actions {y.shape}, got {base.shape}")
    if isinstance(ablated_predictions, Mapping):
        if heads is not None:
            raise ValueError("pass heads only with an (H, N, A) array; a {head: predictions} mapping names its heads")
        heads = list(ablated_predictions)
        ablated = [_matrix(ablated_predictions[h], f"ablated_predictions[{h}]") for h in heads]
    else:
        stack = np.asarray(ablated_predictions, dtype=np.float64)
        if stack.ndim != 3:
            raise ValueError(f"ablated_predictions must be (heads, N, A) or a mapping, got shape {stack.shape}")
        if heads is None or len(heads) != stack.shape[0]:
            raise ValueError(f"ablated_predictions has {stack.shape[0]} heads: pass heads=[...] naming them")
        ablated = list(stack)
    for h, pred in zip(heads, ablated):
        if pred.shape != y.shape:
            raise ValueError(f"ablated predictions of {h} have shape {pred.shape}; actions have {y.shape}")
    baseline_mse = float(np.mean((base - y) ** 2))
    mse = np.array([np.mean((pred - y) ** 2) for pred in ablated])
    return HeadScores(tuple(Head.parse(h) for h in heads), {"cma": mse - baseline_mse, "cma/mse": mse},
                      {"cma": True, "cma/mse": True}, layout=layout, method="cma", fingerprint=fingerprint,
                      data=data or f"{y.shape[0]} frames", meta={"baseline_mse": baseline_mse})


def _matrix(x, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, A), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN/inf")
    return a


# --- the model-forward loop ---------------------------------------------------------------------------------
@torch.no_grad()
def cma_head_scores(vla, frames: Sequence[Any], *, baseline: Sequence[Any] | None = None,
                    heads: Sequence[Head | str] | None = None, unnorm_key: str | None = None, batch_size: int = 4,
                    heads_per_batch: int = 8, progress: bool = True) -> HeadScores:
    """``cma_head_scores(vla, frames)`` -> ``HeadScores`` with ``cma`` and ``cma/mse``, one row per LLM head.

    ``frames``: ``Frame`` objects or mappings (image, instruction, action, proprio if the model takes it);
    ``baseline``: the frames whose mean output replaces a head (default: ``frames``); ``heads``: LLM heads to score
    (default: every active one). A forward runs ``batch_size`` frames times ``heads_per_batch`` heads at once.
    """
    from tqdm.auto import tqdm

    from ..data.frames import Frame
    from ..interventions import active_heads
    from .record import RecordConfig, record_heads

    from .pi0 import is_pi0

    if is_pi0(vla):
        raise ValueError("cma (the release's selector for OpenVLA) replaces a head at the first action token, which "
                         "pi0's VLM does not have; on pi0 score heads with knn, activation or attribution")
    if batch_size < 1 or heads_per_batch < 1:
        raise ValueError(f"batch_size and heads_per_batch must be >= 1, got {batch_size} and {heads_per_batch}")
    frames = [Frame.coerce(f, f"frame {i}") for i, f in enumerate(frames)]
    if not frames:
        raise ValueError("cma_head_scores needs at least one frame")
    heads = [Head.parse(h) for h in (active_heads(vla, "llm") if heads is None else heads)]
    if not heads or any(h.tower != "llm" for h in heads):
        raise ValueError(f"cma scores LLM heads (the first action token is an LLM position); got {heads[:4]}")
    recorded = record_heads(vla, list(frames if baseline is None else baseline), RecordConfig(
        towers=("llm",), position="first_action", keyframes_only=False, batch_size=batch_size, unnorm_key=unnorm_key),
        progress=False)
    layer_means = baseline_means(recorded.acts["llm"])  # (L, H, D)
    means = {hook_name("llm", layer, "hook_z"): torch.as_tensor(layer_means[layer], dtype=torch.float32)
             for layer in {h.layer for h in heads}}  # (H, D) per site
    stats = vla.norm_stats(unnorm_key)["action"]
    n_dims = len(stats["q01"])
    actions = np.stack([np.asarray(f.action, dtype=np.float64).reshape(-1, n_dims)[0] for f in frames])  # (N, A)
    base = np.zeros_like(actions)
    ablated = np.zeros((len(heads), *actions.shape))
    batches = _prompt_batches(vla, frames, batch_size)
    chunks = [heads[i : i + heads_per_batch] for i in range(0, len(heads), heads_per_batch)]
    log.info("cma: %d heads x %d frames, %d frame batch(es) x %d head chunk(s), %d baseline frames", len(heads),
             len(frames), len(batches), len(chunks), len(recorded))
    bar = tqdm(total=len(batches) * len(chunks), desc="cma ablations", disable=not progress)
    predict = _chunk_predictions if vla.config.parallel_decoding else _token_predictions
    for rows in batches:
        inputs = _action_inputs(vla, [frames[i] for i in rows], unnorm_key)
        for start, predicted in predict(vla, inputs, chunks, means, stats, bar):
            if start is None:
                base[rows] = predicted
            else:
                ablated[start : start + predicted.shape[0], rows] = predicted  # (c, B, A)
    bar.close()
    return cma_scores(actions, base, ablated, heads, layout=vla.head_layout, fingerprint=vla.fingerprint(),
                      data=f"{len(frames)} frames, {len(recorded)} baseline frames")


def _prompt_batches(vla, frames, batch_size: int) -> list[list[int]]:
    """Frame indices in batches whose prompts have one length (so no row is padded), in first-seen order."""
    by_length: dict[int, list[int]] = {}
    for i, frame in enumerate(frames):
        by_length.setdefault(int(vla.tokenize(frame.instruction).shape[1]), []).append(i)
    return [rows[j : j + batch_size] for rows in by_length.values() for j in range(0, len(rows), batch_size)]


def _action_inputs(vla, frames, unnorm_key):
    """``(input_ids (B, L), pixel_values, normalised proprio or None)`` as ``predict_action`` feeds the model."""
    ids = torch.cat([vla.tokenize(f.instruction) for f in frames])
    images = [np.asarray(f.image) for f in frames] if vla.config.n_views == 1 else [list(f.images) for f in frames]
    proprio = np.stack([np.asarray(f.proprio, dtype=np.float64) for f in frames]) if vla.config.proprio_dim else None
    return vla.action_inputs(images, input_ids=ids, proprio=proprio, unnorm_key=unnorm_key, caller="cma_head_scores")


def _mean_hooks(chunk: Sequence[Head], means: Mapping[str, torch.Tensor], copies: int, position):
    """Rows ``j, j + copies, ...`` (copy j of every frame) get head ``chunk[j]`` replaced by its mean at ``position``."""
    from ..interventions import group_by_site, head_slice_hooks

    def edit(out, act, site, name, items):
        for j, h in items:
            out[j::copies, position, h] = means[name][h].to(act.device, act.dtype)
    return head_slice_hooks(group_by_site((head, (j, head.head)) for j, head in enumerate(chunk)), edit)


def _token_predictions(vla, inputs, chunks, means, stats, bar):
    """Yield ``(None, baseline (B, A))`` then ``(first head index, (c, B, A))`` per chunk: greedy action tokens."""
    from ..models.action_tokenizer import unnormalize
    from ..models.generation import greedy_steps

    ids, pixels, proprio = inputs
    n_tokens = len(stats["q01"])
    out = vla(input_ids=ids, pixel_values=pixels, proprio=proprio, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1].argmax(dim=-1)  # (B,): no head at the first action token can change it

    def decode(cache, tokens, hooks) -> np.ndarray:  # the rest of the greedy loop; hooks on the first action token
        chosen, _ = greedy_steps(vla, cache, tokens, n_tokens - 1, first_step=lambda: vla.hooks(fwd_hooks=hooks))
        return unnormalize(vla.action_tokenizer.decode(torch.stack([tokens, *chosen], dim=1).cpu()), stats)  # (rows, A)

    b = ids.shape[0]
    yield None, decode(copy.deepcopy(out.past_key_values), first, ())
    start = 0
    for chunk in chunks:
        cache = copy.deepcopy(out.past_key_values)
        cache.batch_repeat_interleave(len(chunk))  # row b * c + j: frame b, head chunk[j]
        hooks = _mean_hooks(chunk, means, len(chunk), slice(None))  # the one position of this step
        predicted = decode(cache, first.repeat_interleave(len(chunk)), hooks)
        yield start, predicted.reshape(b, len(chunk), -1).transpose(1, 0, 2)
        start += len(chunk)
        bar.update(1)


def _chunk_predictions(vla, inputs, chunks, means, stats, bar):
    """The same for an action-chunk model: one pass per head chunk, the first action of each predicted chunk."""
    from ..models.action_heads import predict_chunk

    ids, pixels, proprio = inputs
    b = ids.shape[0]
    position = vla.n_prefix - 1 + ids.shape[1]  # the first action slot (text token len(prompt), sequence.text_position)
    yield None, predict_chunk(vla, ids, pixels, proprio, stats).actions[:, 0]
    start = 0
    for chunk in chunks:
        c = len(chunk)
        rep = [None if x is None else x.repeat_interleave(c, dim=0) for x in (ids, pixels, proprio)]
        with vla.hooks(fwd_hooks=_mean_hooks(chunk, means, c, position)):
            predicted = predict_chunk(vla, *rep, stats).actions[:, 0]  # (B * c, A)
        yield start, predicted.reshape(b, c, -1).transpose(1, 0, 2)
        start += c
        bar.update(1)

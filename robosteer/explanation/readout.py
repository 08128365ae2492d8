"""From the recorded residual stream to the action: direct effects of every LLM head, with the norms frozen.

The action is read from the final residual stream ``x`` (the last block's output) at the read positions.
Freezing every normalisation at the point makes that readout linear up to the action head:

- the final RMSNorm ``y = g * x / rms(x0)`` divides by the *actual* norm factor ``rms(x0)``, held fixed;
- for the regression head, each ``nn.LayerNorm`` inside it subtracts the mean (linear) and divides by
  the actual standard deviation, held fixed. Without this the head's first LayerNorm, which is scale
  invariant, would make the gradient orthogonal to ``x`` and every linearised total zero.

Each component ``c`` of ``x`` (a head's output through its slice of ``o_proj``, the embeddings, each MLP,
the attention biases) then has the direct effect ``G . c`` on every output, where ``G`` is the gradient
of the output with respect to ``x`` with the norms frozen. For the chosen token's logit the readout is
linear, so the effects add up to the logit exactly; for the expected action and the regression head's
action it is linearised at the point, and ``f(x0) = f(0) + sum_c G . c + gap``: ``f(0)`` (the value at
an empty residual, norms frozen) is the ``baseline`` item, and ``gap`` is the linearisation's error.

``G`` for every output of every model comes from one ``torch.autograd.grad`` call (the one backward),
through the readout only, with an identity cotangent per output (``is_grads_batched``).

Usage::

    readouts = read_out([(vla, trace, TokenReadout(vla, trace.tokens, scale, offset))])
    heads, rest = decompose(vla, trace, readouts[0])    # (n_heads, Q, K, A), {item: (Q, K, A)}
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..models.action_heads import oft_unnormalize
from ..models.action_tokenizer import unnormalize

TOKEN_QUANTITIES = ("logit", "expected")  # the chosen token's logit; the expected action over the 256 bins
CHUNK_QUANTITIES = ("action",)  # the regression head's action


def action_affine(vla, unnorm_key: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``(scale (A,), offset (A,))`` with un-normalised action = scale * normalised + offset (both maps are affine)."""
    cfg = vla.config
    stats = vla.norm_stats(unnorm_key)["action"]
    dims = len(stats["q01"])
    if cfg.parallel_decoding and cfg.normalization != "openvla":
        undo = lambda v: oft_unnormalize(v, stats, cfg.normalization)  # noqa: E731
    else:
        undo = lambda v: unnormalize(v, stats)  # noqa: E731
    offset = np.asarray(undo(np.zeros((1, dims))), dtype=np.float64)[0]
    return np.asarray(undo(np.ones((1, dims))), dtype=np.float64)[0] - offset, offset


def final_norm(vla) -> nn.Module:
    """The LLM's final RMSNorm (Llama: ``model.norm``), between the last block and the unembedding."""
    return vla.language_model.model.norm


class FrozenNorm:
    """``y = g * x / rms(x0)``: the final RMSNorm with its factor fixed at the recorded point ``x0`` (P, D)."""

    def __init__(self, norm: nn.Module, x0: torch.Tensor) -> None:
        self.weight = norm.weight.detach().float()
        self.inv_rms = torch.rsqrt(x0.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)  # (P, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * self.inv_rms)


@contextlib.contextmanager
def frozen_layer_norms(module: nn.Module, stds: dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside, each ``nn.LayerNorm`` of ``module`` divides by a standard deviation outside autograd: the first
    call records it into ``stds`` (name -> tensor), later calls reuse it. Values are unchanged."""
    handles = []
    try:
        for name, norm in module.named_modules():
            if isinstance(norm, nn.LayerNorm):
                handles.append(norm.register_forward_hook(_frozen_layer_norm(name, stds)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _frozen_layer_norm(name: str, stds: dict[str, torch.Tensor]):
    def hook(module: nn.LayerNorm, args, output):
        x = args[0]
        if name not in stds:
            stds[name] = torch.sqrt(x.detach().var(-1, unbiased=False, keepdim=True) + module.eps)
        out = (x - x.mean(-1, keepdim=True)) / stds[name]
        return out * module.weight + module.bias if module.elementwise_affine else out
    return hook


class TokenReadout:
    """Token actions: ``(Q=2, K=1, A)``, the chosen token's logit and the expected action (action units).

    The expected action is ``sum_b softmax(logits[action ids])_b * value_b``, over the 256 action tokens
    (``value_b`` their decoded bin centres), un-normalised: a smooth stand-in for the argmax bin.
    """

    quantities = TOKEN_QUANTITIES

    def __init__(self, vla, tokens: torch.Tensor, scale: np.ndarray, offset: np.ndarray) -> None:
        tok = vla.action_tokenizer
        self.unembed = vla.language_model.get_output_embeddings()
        self.ids = slice(tok.first_id, tok.vocab_end)
        device = vla.device
        self.values = torch.tensor(tok.decode(np.arange(tok.first_id, tok.vocab_end)), dtype=torch.float32,
                                   device=device)
        self.tokens = tokens.to(device)
        self.scale = torch.tensor(scale, dtype=torch.float32, device=device)
        self.offset = torch.tensor(offset, dtype=torch.float32, device=device)
        self.dtype = next(self.unembed.parameters()).dtype

    def from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(A, V) logits -> (2, 1, A)."""
        chosen = logits.gather(-1, self.tokens[:, None])[:, 0]
        expected = F.softmax(logits[:, self.ids], dim=-1) @ self.values
        return torch.stack([chosen, self.scale * expected + self.offset])[:, None]

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """Normed residual (A, D) at the read positions -> (2, 1, A)."""
        return self.from_logits(self.unembed(y.to(self.dtype)).float())

    def model_values(self, trace) -> torch.Tensor:
        """The same quantities from the model's own logits (what the gap is measured against)."""
        return self.from_logits(trace.logits)


class ChunkReadout:
    """A regression head: ``(Q=1, K, A)``, its action (action units), its LayerNorms frozen at the point."""

    quantities = CHUNK_QUANTITIES

    def __init__(self, vla, scale: np.ndarray, offset: np.ndarray) -> None:
        self.head = vla.action_head
        self.stds: dict[str, torch.Tensor] = {}  # recorded by the first (differentiated) call
        device = vla.device
        self.scale = torch.tensor(scale, dtype=torch.float32, device=device)
        self.offset = torch.tensor(offset, dtype=torch.float32, device=device)
        self.dtype = next(self.head.parameters()).dtype

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """Normed residual (K*A, D) at the read positions -> (1, K, A)."""
        with frozen_layer_norms(self.head, self.stds):
            out = self.head.predict_action(y[None].to(self.dtype)).float()[0]  # (K, A) normalised
        return (self.scale * out + self.offset)[None]

    def model_values(self, trace) -> torch.Tensor:
        return (self.scale * trace.normalized + self.offset)[None]


@dataclass
class Readout:
    """One model's readout at the recorded point."""

    values: torch.Tensor  # (Q, K, A): the readout at x0 (frozen norms change gradients, not values)
    baseline: torch.Tensor  # (Q, K, A): the readout at an empty residual, norms frozen at x0
    directions: torch.Tensor  # (Q, K, A, P, D): d output / d x at x0, norms frozen
    model_values: torch.Tensor  # (Q, K, A): the same quantities from the model's own output


def read_out(models: Sequence[tuple]) -> list[Readout]:
    """``read_out([(vla, trace, readout), ...])``: each model's readout and its gradients, in ONE backward call."""
    leaves, outputs, norms = [], [], []
    with torch.enable_grad():
        for vla, trace, readout in models:
            x0 = trace.resid_post[-1]  # (P, D) the final residual
            norm = FrozenNorm(final_norm(vla), x0)
            leaf = x0.clone().requires_grad_(True)
            leaves.append(leaf)
            norms.append(norm)
            outputs.append(readout(norm(leaf)))
        n = outputs[0].numel()
        if any(o.numel() != n for o in outputs):
            raise ValueError("the models read out different numbers of outputs; explain needs one architecture")
        eye = torch.eye(n, device=leaves[0].device)
        grads = torch.autograd.grad([o.reshape(-1) for o in outputs], leaves, grad_outputs=[eye] * len(outputs),
                                    is_grads_batched=True)
    results = []
    with torch.no_grad():
        for (vla, trace, readout), leaf, out, grad in zip(models, leaves, outputs, grads):
            baseline = readout(torch.zeros_like(leaf))
            results.append(Readout(values=out.detach(), baseline=baseline,
                                   directions=grad.reshape(*out.shape, *leaf.shape),
                                   model_values=readout.model_values(trace)))
    return results


def _plain_linear(module: nn.Module) -> bool:
    """A bare ``nn.Linear`` (no adapter wrapping, hooks or parametrisation): its weight is the whole map."""
    return (type(module) is nn.Linear and not module._forward_hooks and not module._forward_pre_hooks
            and not parametrize.is_parametrized(module))


def head_outputs(o_proj: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Each head's output through its slice of the output projection, bias excluded: ``(H, P, D)`` from z (P, H, Dh).

    Exact for any affine ``o_proj`` (LoRA, head deltas): each head's input alone goes through the module, minus
    the module at zero input; a bare ``nn.Linear`` uses its weight's column slices directly.
    """
    n_pos, n_heads, head_dim = z.shape
    if _plain_linear(o_proj):
        weight = o_proj.weight.detach().float().view(-1, n_heads, head_dim)  # (D, H, Dh)
        return torch.einsum("phe,dhe->hpd", z, weight)
    dtype = next(o_proj.parameters()).dtype
    alone = torch.zeros(n_heads, n_pos, n_heads, head_dim, dtype=dtype, device=z.device)
    index = torch.arange(n_heads, device=z.device)
    alone[index, :, index] = z.permute(1, 0, 2).to(dtype)  # alone[h, :, h] = z[:, h]
    with torch.no_grad():
        out = o_proj(alone.reshape(n_heads, n_pos, n_heads * head_dim)).float()
        bias = o_proj(torch.zeros(1, 1, n_heads * head_dim, dtype=dtype, device=z.device)).float()
    return out - bias


def decompose(vla, trace, readout: Readout) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(heads (L*H, Q, K, A), rest {item: (Q, K, A)})`` with ``sum(heads) + sum(rest) = baseline + G . x0``.

    Rest items: ``embed`` (block 0's input: text and action-token embeddings, projected patches, proprio),
    ``llm.L{l}.mlp`` (each block's MLP output: resid_post - resid_pre - attn_out), ``attn_bias`` (each
    layer's attention output minus its heads' outputs: the output projection's bias, zero for Llama, plus
    float rounding) and ``baseline`` (the readout at an empty residual).
    """
    tower = vla.tower_modules()["llm"]
    shape = readout.directions.shape[:3]  # (Q, K, A)
    directions = readout.directions.reshape(-1, readout.directions[0, 0, 0].numel())  # (Q*K*A, P*D)

    def effect(vectors: torch.Tensor) -> torch.Tensor:  # (N, P, D) -> (N, Q, K, A)
        return (vectors.reshape(vectors.shape[0], -1) @ directions.T).reshape(-1, *shape)

    heads, attn_bias, mlps = [], torch.zeros_like(trace.embed), []
    previous = trace.embed
    for layer in range(trace.z.shape[0]):
        parts = head_outputs(tower.projection(layer, "out"), trace.z[layer])  # (H, P, D)
        heads.append(effect(parts))
        attn_bias = attn_bias + trace.attn_out[layer] - parts.sum(0)
        mlps.append(trace.resid_post[layer] - previous - trace.attn_out[layer])
        previous = trace.resid_post[layer]
    rest_vectors = effect(torch.stack([trace.embed, *mlps, attn_bias]))
    names = ["embed", *(f"llm.L{layer}.mlp" for layer in range(len(mlps))), "attn_bias"]
    rest = dict(zip(names, rest_vectors))
    rest["baseline"] = readout.baseline
    return torch.cat(heads), rest

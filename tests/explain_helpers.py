"""Helpers of tests/test_explain.py: hand computations of direct effects from the plain weights (independent of
robosteer.explanation), adapted copies of a model, and a counter of forward and backward passes."""

from __future__ import annotations

import copy

import numpy as np
import torch

from robosteer.explanation.counting import counting
from robosteer.masks import HeadMask
from robosteer.models.action_heads import with_action_slots

TEXT = "pick up the red cube"


def sequence(vla, image, kw, ex):
    """The explained input as one teacher-forced forward: prompt + the first A-1 tokens, or prompt + slots."""
    ids, pixels, prop = vla.action_inputs(image, TEXT, **kw)
    if ex.tokens is not None:
        ids = torch.cat([ids, torch.tensor(ex.tokens[:-1])[None]], dim=1)
    else:
        ids = with_action_slots(ids, vla.n_action_slots)
    return dict(input_ids=ids, pixel_values=pixels, proprio=prop)


def head_vectors(vla, cache, layer: int, pos) -> torch.Tensor:
    """(H, P, D): each head's output through its columns of o_proj, from the plain weights."""
    tower = vla.tower_modules()["llm"]
    z = cache[f"llm.blocks.{layer}.attn.hook_z"][0, pos]  # (P, H, Dh)
    w = tower.projection(layer, "out").weight.view(tower.d_model, tower.n_heads, tower.head_dim)
    return torch.einsum("phe,dhe->hpd", z, w)


@torch.no_grad()
def token_reference(vla, image, kw, ex):
    """Direct effects on the chosen logit and the expected action, by hand: (L*H, A) each."""
    _, cache = vla.run_with_cache(**sequence(vla, image, kw, ex))
    n_layers = vla.head_layout.shape("llm")[0]
    pos = [p for p in ex.read_positions]
    x = cache[f"llm.blocks.{n_layers - 1}.hook_resid_post"][0, pos]  # (A, D)
    norm = vla.language_model.model.norm
    scale_rows = norm.weight * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)  # (A, D)
    w_u = vla.language_model.lm_head.weight
    tok = vla.action_tokenizer
    ids = torch.arange(tok.first_id, tok.vocab_end)
    values = torch.tensor(tok.decode(ids.numpy()), dtype=torch.float32)
    stats = vla.norm_stats()["action"]
    span = 0.5 * (np.array(stats["q99"]) - np.array(stats["q01"]))
    s = torch.tensor(np.where(stats.get("mask", [True] * 7), span, 1.0), dtype=torch.float32)
    logits = (x * scale_rows) @ w_u[ids].T  # (A, 256)
    p = torch.softmax(logits, -1)
    ev = p @ values
    u_logit = scale_rows * w_u[torch.tensor(ex.tokens)]  # (A, D)
    u_ev = s[:, None] * scale_rows * ((p * (values - ev[:, None])) @ w_u[ids])  # d(s * EV)/dx, norm frozen
    logit_de, ev_de = [], []
    for layer in range(n_layers):
        c = head_vectors(vla, cache, layer, pos)  # (H, A, D)
        logit_de.append(torch.einsum("hpd,pd->hp", c, u_logit))
        ev_de.append(torch.einsum("hpd,pd->hp", c, u_ev))
    return torch.cat(logit_de).numpy(), torch.cat(ev_de).numpy()


def frozen_head(vla, y0: torch.Tensor):
    """The regression head as a function of its input, every LayerNorm's std fixed at its value for ``y0``."""
    head = vla.action_head.model
    k, width = vla.config.action_chunk, y0.shape[-1] * vla.config.action_dim
    stds = {}

    def ln(mod, t, key):
        if key not in stds:
            stds[key] = torch.sqrt(t.detach().var(-1, unbiased=False, keepdim=True) + mod.eps)
        return (t - t.mean(-1, keepdim=True)) / stds[key] * mod.weight + mod.bias

    def f(y):  # (K*A, D) -> (K, A) normalised
        h = torch.relu(head.fc1(ln(head.layer_norm1, y.reshape(k, width), "ln1")))
        for i, block in enumerate(head.mlp_resnet_blocks):
            h = h + torch.relu(block.ffn[1](ln(block.ffn[0], h, f"b{i}")))
        return head.fc2(ln(head.layer_norm2, h, "ln2"))
    f(y0)
    return f


def chunk_reference(vla, image, kw, ex):
    """Direct effects on the regression head's action by hand (jacobian of a hand-written frozen head): (L*H, K, A)."""
    with torch.no_grad():
        _, cache = vla.run_with_cache(**sequence(vla, image, kw, ex))
    n_layers = vla.head_layout.shape("llm")[0]
    pos = list(ex.read_positions)
    x0 = cache[f"llm.blocks.{n_layers - 1}.hook_resid_post"][0, pos]  # (K*A, D)
    norm = vla.language_model.model.norm
    inv = torch.rsqrt(x0.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    head = frozen_head(vla, norm.weight * x0 * inv)
    stats = vla.norm_stats()["action"]
    span = np.array(stats["q99"]) - np.array(stats["q01"]) + (1e-8 if vla.config.normalization != "openvla" else 0)
    s = torch.tensor(np.where(stats.get("mask", [True] * 7), 0.5 * span, 1.0), dtype=torch.float32)
    jac = torch.autograd.functional.jacobian(lambda x: s * head(norm.weight * x * inv), x0)  # (K, A, K*A, D)
    out = [torch.einsum("kapd,hpd->hka", jac, head_vectors(vla, cache, layer, pos)) for layer in range(n_layers)]
    return torch.cat(out).detach().numpy()


def heads_adapted(base, heads):
    from robosteer.train.strategies import make_strategy

    adapted = copy.deepcopy(base)
    strategy = make_strategy("heads", mask=HeadMask.from_heads(heads, base.head_layout))
    strategy.prepare(adapted)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in strategy.deltas.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if name.endswith("_o") or ".o" in name else 0.05))
    return adapted.eval()


def lora_adapted(base):
    from robosteer.train.strategies import make_strategy

    adapted = copy.deepcopy(base)
    make_strategy("lora").prepare(adapted)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return adapted.eval()



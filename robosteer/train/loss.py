"""The training loss: next-token cross-entropy on the action tokens and EOS, optionally smoothed.

``OpenVLA.forward(labels=...)`` already computes OpenVLA's plain loss; the trainer
computes it here from the logits instead so that it can also offer label smoothing
over neighbouring action bins: the one-hot target of an action token is replaced by
a Gaussian over the action-token ids (neighbouring ids are neighbouring bins), with
standard deviation ``sigma`` bins. EOS targets stay one-hot. ``sigma=0`` is exactly
OpenVLA's loss. Which logit predicts which label comes from ``models.sequence``
(``predicting_text``: the logits aligned with ``labels[:, 1:]``).

Usage::

    out = vla(**batch.model_inputs())
    loss = action_loss(out.logits, batch.labels, vla.n_prefix, vla.action_tokenizer, sigma=1.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.action_tokenizer import ActionTokenizer
from ..models.sequence import predicting_text
from ..models.vla import IGNORE_INDEX


def action_loss(logits: torch.Tensor, labels: torch.Tensor, n_prefix: int, action_tokenizer: ActionTokenizer,
                sigma: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """``action_loss(logits, labels, vla.n_prefix, vla.action_tokenizer)`` -> the loss (mean over loss tokens).

    ``reduction="sum"`` returns the sum over loss tokens (for averaging across processes).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if sigma < 0:
        raise ValueError(f"label smoothing sigma must be >= 0, got {sigma}")
    targets = labels[:, 1:]  # (B, L - 1)
    keep = targets != IGNORE_INDEX
    picked = predicting_text(logits, n_prefix)[keep].float()  # (N, V): the logits that predict the targets
    targets = targets[keep]  # (N,)
    if sigma == 0:
        return F.cross_entropy(picked, targets, reduction=reduction)
    log_probs = F.log_softmax(picked, dim=-1)  # (N, V)
    nll = -log_probs.gather(1, targets[:, None])[:, 0]  # (N,)
    is_action = action_tokenizer.is_action(targets)
    first, end = action_tokenizer.first_id, action_tokenizer.vocab_end
    ids = torch.arange(first, end, device=picked.device, dtype=torch.float32)  # (n_bins,)
    dist = ids[None, :] - targets[:, None].float()  # (N, n_bins)
    soft = torch.softmax(-0.5 * (dist / sigma) ** 2, dim=-1)  # Gaussian weights, rows sum to 1
    smoothed = -(soft * log_probs[:, first:end]).sum(dim=-1)  # (N,)
    per_token = torch.where(is_action, smoothed, nll)
    return per_token.sum() if reduction == "sum" else per_token.mean()

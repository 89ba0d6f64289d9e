"""Per-edge losses from a positive score and a row of (masked) negative scores.

Every loss returns one value per positive so the trainer can apply relation and edge weights and then
*sum* over the batch (PBG's reduction: the Adagrad lr of PBG configs assumes it).  ``valid`` marks the
negatives that count: the positive itself, and samples equal to the true entity, are masked out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logistic_loss(pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """BCE with logits: positives label 1, negatives label 0, negatives averaged per positive.

    The negatives of one positive share weight 1/count, so their total weight equals the positive's
    (TwHIN's intended weighting; its release labels negatives 1, which this never does).
    """
    validf = valid.to(neg.dtype)
    count = validf.sum(-1).clamp_min(1.0)
    return F.softplus(-pos) + (F.softplus(neg) * validf).sum(-1) / count


def ranking_loss(pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:
    """PBG's margin ranking loss: sum_j max(0, margin - s + t_j) over the valid negatives."""
    return (F.relu(margin - pos.unsqueeze(-1) + neg) * valid.to(neg.dtype)).sum(-1)


def softmax_loss(pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """PBG's softmax: -s + logsumexp([s, t_1..t_n]) (the positive is in the denominator)."""
    masked = neg.masked_fill(~valid, float("-inf"))
    return torch.logsumexp(torch.cat([pos.unsqueeze(-1), masked], dim=-1), dim=-1) - pos


def edge_losses(
    kind: str, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Loss per positive for ``kind`` in logistic | ranking | softmax."""
    kind = str(kind)
    if kind == "logistic":
        return logistic_loss(pos, neg, valid)
    if kind == "ranking":
        return ranking_loss(pos, neg, valid, margin)
    if kind == "softmax":
        return softmax_loss(pos, neg, valid)
    raise ValueError(f"unknown loss {kind!r} (choices: logistic, ranking, softmax)")

"""Per-edge losses from a positive score and a row of negative scores, some of them masked.

Every loss returns one value per positive so the trainer can apply relation and edge weights and then
*sum* over the batch (PBG's reduction: the Adagrad lr of PBG configs assumes it).  ``masked[i, j]``
excludes negative j for positive i: the positive itself, and samples equal to the true entity, never
count as negatives.  The score matrices are the hot path, so each loss makes as few passes as it can.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logistic_loss(pos: torch.Tensor, neg: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """BCE with logits: positives label 1, negatives label 0, negatives averaged per positive.

    The negatives of one positive share weight 1/count, so their total weight equals the positive's
    (TwHIN's intended weighting; its release labels negatives 1, which this never does).
    """
    count = (masked.shape[-1] - masked.sum(-1)).clamp_min(1).to(pos.dtype)
    per_neg = F.softplus(neg.float()).masked_fill(masked, 0.0)
    return F.softplus(-pos) + per_neg.sum(-1) / count


def ranking_loss(pos: torch.Tensor, neg: torch.Tensor, masked: torch.Tensor, margin: float) -> torch.Tensor:
    """PBG's margin ranking loss: sum_j max(0, margin - s + t_j) over the unmasked negatives."""
    return F.relu((margin - pos).unsqueeze(-1) + neg.float()).masked_fill(masked, 0.0).sum(-1)


def softmax_loss(pos: torch.Tensor, neg: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """PBG's softmax: -s + logsumexp([s, t_1..t_n]) (the positive is in the denominator).

    Computed as logaddexp(s, logsumexp(masked negatives)) - s, which avoids concatenating the positive
    into the [B, C] score matrix (measured fastest of the fused variants tried).
    """
    lse = torch.logsumexp(torch.where(masked, float("-inf"), neg.float()), dim=-1)
    return torch.logaddexp(pos, lse) - pos


def edge_losses(
    kind: str, pos: torch.Tensor, neg: torch.Tensor, masked: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Loss per positive for ``kind`` in logistic | ranking | softmax."""
    kind = str(kind)
    pos = pos.float()
    if kind == "logistic":
        return logistic_loss(pos, neg, masked)
    if kind == "ranking":
        return ranking_loss(pos, neg, masked, margin)
    if kind == "softmax":
        return softmax_loss(pos, neg, masked)
    raise ValueError(f"unknown loss {kind!r} (choices: logistic, ranking, softmax)")

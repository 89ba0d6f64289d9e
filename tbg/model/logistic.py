"""The logistic loss as one autograd function: its gradient is one sigmoid pass over the score matrix.

Through autograd, ``softplus(-s) + sum_j softplus(t_j) / count`` backpropagates through a select and a slice
of the logits: each backward allocates a zero matrix of the logits' size, copies its part in, and the two are
added.  Here the backward is ``sigmoid(logits)`` scaled per row in place, the positive's column set apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _LogisticLoss(torch.autograd.Function):
    """``softplus(-logits[:, 0]) + softplus(logits[:, 1:]).sum(1) / count.clamp_min(1)`` per row."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        scale = count.clamp_min(1).reciprocal()
        ctx.save_for_backward(logits, scale)
        return F.softplus(-logits[:, 0]).addcmul_(F.softplus(logits[:, 1:]).sum(1), scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor):  # type: ignore[override]
        logits, scale = ctx.saved_tensors
        grad = torch.sigmoid(logits)  # masked entries: sigmoid(-1e30) = 0
        grad[:, 1:].mul_((g * scale).unsqueeze(1))
        grad[:, 0].mul_(g).sub_(g)  # d softplus(-s) / ds = sigmoid(s) - 1
        return grad, None


def logistic_loss(logits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Per-row logistic loss of ``logits [N, 1 + K]`` (column 0 the positive, masked entries -1e30) with
    ``count [N]`` valid negatives per row, each weighted 1/count."""
    return _LogisticLoss.apply(logits, count)

"""PBG's softmax loss through the saved softmax: one exp pass over the score matrix, forward and backward."""

from __future__ import annotations

import torch


class _SoftmaxLoss(torch.autograd.Function):
    """``logsumexp(logits) - logits[:, 0]`` computed through the saved softmax, one exp pass in all.

    exp is what a loss over the [B, 1 + K] score matrix spends its time on on CPU.  Cross-entropy evaluates
    it twice: in log_softmax, and again in its backward (after filling and scattering a one-hot gradient).
    Saving ``p = softmax(logits)`` makes the backward a multiply in place (``p * g``, minus ``g`` in the
    positive's column).  The loss stays exact without taking ``log p_0`` (it underflows when the positive
    scores ~90 below the best negative): ``logsumexp = max - log(max p)``, since the top entry's
    probability is ``1 / sum(exp(x - max))``.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        p = torch.softmax(logits, dim=1)
        ctx.save_for_backward(p)
        return logits.amax(1) - logits[:, 0] - p.amax(1).log()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (p,) = ctx.saved_tensors
        grad = p.mul_(g.unsqueeze(1))  # the saved buffer is not needed again: backward runs once
        grad[:, 0] -= g
        return grad


def softmax_loss(logits: torch.Tensor) -> torch.Tensor:
    """PBG's softmax over ``logits`` = [s, t_1..t_n]: -s + logsumexp(logits) (the positive is in the
    denominator); masked entries (-1e30) get probability 0 and an exactly zero gradient."""
    return _SoftmaxLoss.apply(logits)

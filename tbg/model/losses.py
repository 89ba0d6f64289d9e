"""Losses, one registered class each: logistic, ranking, softmax.

A loss maps the fp32 ``logits [N, 1 + K]`` of a batch (both sides stacked, N = 2B rows; column 0 the
positive's score, then its K negatives, the masked ones already MASKED = -1e30: the positive itself, and
samples equal to the true entity) and each row's count of valid negatives to one value per row, so the
trainer can apply relation and edge weights and then *sum* over the batch (PBG's reduction: the Adagrad lr
of PBG configs assumes it).  The score matrices are the hot path, so each loss makes as few passes as it can.  Torch is
imported only when a loss runs, so the config checks names here without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tbg.registry import Registry

if TYPE_CHECKING:
    import torch

    from tbg.config import ModelConfig


class Loss:
    """Per-positive loss of ``logits [B, 1 + K]`` with ``count [B]`` valid (unmasked) negatives per row."""

    name: str  # set by LOSSES.register
    needs_count = True  # False: __call__ never reads ``count``, so the step passes None and skips counting

    @classmethod
    def from_config(cls, model: ModelConfig) -> Loss:
        """The loss with its settings from the config's ``model`` section (none by default)."""
        return cls()

    def __call__(self, logits: torch.Tensor, count: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


LOSSES: Registry[type[Loss]] = Registry("loss")


def build_loss(model: ModelConfig) -> Loss:
    """The loss ``model.loss`` names, configured from the model section."""
    return LOSSES.resolve(model.loss).from_config(model)


@LOSSES.register("logistic")
class LogisticLoss(Loss):
    """BCE with logits: positives label 1, negatives label 0, negatives averaged per positive.

    The ``count`` valid negatives of one positive share weight 1/count, so their total weight equals the
    positive's (TwHIN's intended weighting; its release labels negatives 1, which this never does).
    Masked entries hold -1e30 and contribute softplus(-1e30) = 0 (see :mod:`tbg.model.logistic` for the
    one-pass gradient).
    """

    def __call__(self, logits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        from tbg.model.logistic import logistic_loss

        return logistic_loss(logits, count)


@LOSSES.register("ranking")
class RankingLoss(Loss):
    """PBG's margin ranking loss: sum_j max(0, margin - s + t_j) over the unmasked negatives."""

    needs_count = False

    def __init__(self, margin: float = 0.1) -> None:
        self.margin = margin

    @classmethod
    def from_config(cls, model: ModelConfig) -> Loss:
        return cls(margin=model.margin)

    def __call__(self, logits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return ((self.margin - logits[:, 0]).unsqueeze(-1) + logits[:, 1:]).relu().sum(-1)


@LOSSES.register("softmax")
class SoftmaxLoss(Loss):
    """PBG's softmax: -s + logsumexp([s, t_1..t_n]) (the positive is in the denominator); masked entries get
    probability 0 and an exactly zero gradient (see :mod:`tbg.model.softmax` for the one-exp kernel)."""

    needs_count = False

    def __call__(self, logits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        from tbg.model.softmax import softmax_loss

        return softmax_loss(logits)

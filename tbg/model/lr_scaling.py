"""The learning rate an optimizer steps with at a given batch size: ``optimizer.lr_scaling`` (torch-free).

A config's ``lr`` (or ``learning_rate`` schedule) is the learning rate at the *reference batch* of
:data:`REFERENCE_BATCH` edges per update, the batch PBG's and tbg's WordNet learning rates were tuned at.  At
an effective batch ``B`` (``per_replica_batch_size`` x ``gradient_accumulation``) of ``k = B / REFERENCE_BATCH``
reference batches, the rule multiplies it by:

- ``none``: 1;
- ``sqrt``: sqrt(k);
- ``linear``: k;
- ``auto`` (default): :func:`auto_rule`, the rule measured best (``none``; docs/training.md).

Only batches above the reference are scaled (k < 1 keeps the config's lr: a config tuned at a small batch
means what it says).  The loss is summed over the batch, so SGD's step already grows with the batch; the
adaptive optimizers (Adagrad, row Adagrad, Adam) normalise the gradient away and take about the same step
per update at any batch, so k times fewer updates move a row less far, but a scaled lr also scales the
noise and a large batch's first update moves every row it touched by a full step at once.
"""

from __future__ import annotations

import math

from tbg.config import Config, LrScaling, OptimizerConfig
from tbg.config.optimizers import REFERENCE_BATCH

__all__ = ["REFERENCE_BATCH", "ScaledLr", "auto_rule", "effective_batch", "lr_factor"]


def effective_batch(cfg: Config) -> int:
    """Edges per parameter update: the batch times ``gradient_accumulation``."""
    return cfg.train_data.per_replica_batch_size * (cfg.training.gradient_accumulation or 1)


def auto_rule(kind: str) -> LrScaling:
    """``auto`` for an optimizer kind: the rule measured best, ``none`` (docs/benchmarks.md#large-batches: on
    WordNet at 10 epochs and 10 times the reference batch, Adagrad at the config's lr beat sqrt scaling, with
    or without warm-up, and linear scaling).  SGD's step already grows with the summed loss; Adam, like
    Adagrad, normalises the gradient (not measured)."""
    del kind
    return LrScaling.none


def lr_factor(opt: OptimizerConfig, batch: int) -> float:
    """The factor ``opt``'s lr is multiplied by at an effective batch of ``batch`` edges."""
    rule = auto_rule(opt.kind) if opt.lr_scaling == LrScaling.auto else opt.lr_scaling
    k = batch / REFERENCE_BATCH
    if k <= 1 or rule == LrScaling.none:
        return 1.0
    return math.sqrt(k) if rule == LrScaling.sqrt else k


class ScaledLr:
    """``lr_at(step)``: the optimizer's lr (or schedule) at ``step`` (0-based, counting batches) times its batch
    factor.  A factor above 1 comes with a linear warm-up over the first epoch (``warmup_steps``: its batches):
    the update after batch s uses ``min(1, (s + 1) / warmup_steps)`` of the scaled lr, so a large batch's first
    updates, which move every row the batch touched by a full Adagrad step at once, start small."""

    def __init__(self, opt: OptimizerConfig, batch: int, warmup_steps: int = 0) -> None:
        self.opt = opt
        self.factor = lr_factor(opt, batch)
        self.warmup_steps = warmup_steps if self.factor > 1 else 0

    def lr_at(self, step: int) -> float:
        lr = self.opt.lr_at(step) * self.factor
        if step + 1 < self.warmup_steps:
            lr *= (step + 1) / self.warmup_steps
        return lr

"""The optimizer section of a table (`optimizer`) or of the relation parameters (`translation_optimizer`),
with TwHIN's learning-rate schedules."""

from __future__ import annotations

import math

import attrs

from tbg.config.fields import ConfigEnum, FieldProblem, exactly_one, finite, non_negative, positive, setting

REFERENCE_BATCH = 1000  # edges per update the configs' learning rates mean (PBG's batch): see `lr_scaling`


@attrs.define(kw_only=True)
class SgdConfig:
    """Plain SGD (TwHIN's only embedding optimizer, fused into torchrec's tables)."""

    lr: float = setting("learning rate (overridden by `learning_rate` when that is set)", validator=[finite, positive])
    momentum: float = setting(
        "momentum (on tables: lazy, only the touched rows' buffers move)",
        default=0.0,
        validator=[finite, non_negative],
    )


@attrs.define(kw_only=True)
class AdamConfig:
    """Adam; on embedding tables lazy Adam (`torch.optim.SparseAdam`): only the batch's rows move."""

    lr: float = setting("learning rate (overridden by `learning_rate` when that is set)", validator=[finite, positive])
    betas: tuple[float, float] = setting("Adam's two moment decay rates", default=(0.9, 0.999))
    eps: float = setting(
        "added to the denominator for stability (TwHIN's default)", default=1e-7, validator=[finite, non_negative]
    )


@attrs.define(kw_only=True)
class AdagradConfig:
    """Adagrad: one accumulator per parameter (for a table, D per row)."""

    lr: float = setting("learning rate (overridden by `learning_rate` when that is set)", validator=[finite, positive])
    eps: float = setting(
        "added to the denominator for stability (torch's default)", default=0.0, validator=[finite, non_negative]
    )


@attrs.define(kw_only=True)
class RowAdagradConfig:
    """tbg extension: one accumulator per row (PBG's memory-light default), 1/D of Adagrad's state."""

    lr: float = setting("learning rate (overridden by `learning_rate` when that is set)", validator=[finite, positive])
    eps: float = setting(
        "added to the denominator for stability (PBG's value)", default=1e-10, validator=[finite, non_negative]
    )


@attrs.define(kw_only=True)
class LinearRampToConstant:
    """lr at step s = `learning_rate * min(1, s / num_ramp_steps)`."""

    learning_rate: float = setting("the constant reached at the end of the ramp", validator=[finite, non_negative])
    num_ramp_steps: int = setting("steps of the linear ramp from 0", validator=positive)


@attrs.define(kw_only=True)
class LinearRampToCosine:
    """A linear ramp from 0 to `learning_rate`, then a cosine decay to `final_learning_rate`, then constant."""

    learning_rate: float = setting("peak learning rate, reached after the ramp", validator=[finite, non_negative])
    final_learning_rate: float = setting(
        "learning rate at `final_num_steps` and after", validator=[finite, non_negative]
    )
    num_ramp_steps: int = setting("steps of the linear ramp from 0", validator=positive)
    final_num_steps: int = setting("step at which the cosine decay ends", validator=positive)


@attrs.define(kw_only=True)
class PiecewiseConstant:
    """lr at step s = `learning_rate_values[number of boundaries <= s]`."""

    learning_rate_boundaries: list[int] = setting(
        "steps where the next value starts, strictly increasing", factory=list
    )
    learning_rate_values: list[float] = setting("one more value than boundaries", factory=list)

    def __attrs_post_init__(self) -> None:
        if len(self.learning_rate_values) != len(self.learning_rate_boundaries) + 1:
            raise FieldProblem(
                "learning_rate_values",
                "must have exactly one more entry than learning_rate_boundaries",
            )
        if any(b2 <= b1 for b1, b2 in zip(self.learning_rate_boundaries, self.learning_rate_boundaries[1:])):
            raise FieldProblem("learning_rate_boundaries", "must be strictly increasing")


@attrs.define(kw_only=True)
class LearningRate:
    """TwHIN's schedules (exactly one), with TwHIN's `compute_lr` formulas, step counted from 0.

    TwHIN ignores them (its scheduler is disabled); tbg applies them per step and they override the optimizer's
    `lr`.
    """

    constant: float | None = setting("this learning rate at every step", default=None, validator=[finite, non_negative])
    linear_ramp_to_constant: LinearRampToConstant | None = setting("linear warm-up to a constant", default=None)
    linear_ramp_to_cosine: LinearRampToCosine | None = setting("linear warm-up, then cosine decay", default=None)
    piecewise_constant: PiecewiseConstant | None = setting("a step function", default=None)

    def __attrs_post_init__(self) -> None:
        exactly_one(self, _LR_GROUP, "learning_rate")

    def at(self, step: int) -> float:
        """Learning rate for ``step`` (0-based), with TwHIN's ``compute_lr`` formulas."""
        if self.constant is not None:
            return self.constant
        if (ramp := self.linear_ramp_to_constant) is not None:
            return ramp.learning_rate * min(1.0, step / ramp.num_ramp_steps)
        if (cos := self.linear_ramp_to_cosine) is not None:
            if step < cos.num_ramp_steps:
                return cos.learning_rate * step / cos.num_ramp_steps
            span = max(1, cos.final_num_steps - cos.num_ramp_steps)
            progress = min(1.0, (step - cos.num_ramp_steps) / span)
            return cos.final_learning_rate + 0.5 * (cos.learning_rate - cos.final_learning_rate) * (
                1 + math.cos(math.pi * progress)
            )
        pw = self.piecewise_constant
        assert pw is not None
        index = sum(1 for boundary in pw.learning_rate_boundaries if step >= boundary)
        return pw.learning_rate_values[index]


_LR_GROUP = ("constant", "linear_ramp_to_constant", "linear_ramp_to_cosine", "piecewise_constant")
_OPT_GROUP = ("sgd", "adam", "adagrad", "row_adagrad")


class LrScaling(ConfigEnum):
    """How an optimizer's lr follows the batch size (``optimizer.lr_scaling``; tbg/model/lr_scaling.py)."""

    auto = "auto"
    none = "none"
    sqrt = "sqrt"
    linear = "linear"


@attrs.define(kw_only=True)
class OptimizerConfig:
    """Exactly one of `sgd` / `adam` / `adagrad` (TwHIN) or `row_adagrad` (tbg), plus an optional schedule."""

    learning_rate: LearningRate | None = setting(
        "a schedule that overrides the optimizer's `lr`",
        twhin="ignored (scheduler disabled)",
        default=None,
        default_doc="none: the optimizer's own constant `lr`",
    )
    sgd: SgdConfig | None = setting("plain SGD", default=None)
    adam: AdamConfig | None = setting("Adam (sparse rows on tables)", default=None)
    adagrad: AdagradConfig | None = setting("Adagrad, D accumulators per row", default=None)
    row_adagrad: RowAdagradConfig | None = setting(
        "Adagrad with one accumulator per row (PBG's default), 1/D of Adagrad's state", default=None, ext=True
    )
    lr_scaling: LrScaling = setting(
        "how the lr follows the batch: `lr` (or the schedule) is the lr at 1000 edges per update (PBG's batch);"
        " at B = `per_replica_batch_size` x `gradient_accumulation` above 1000 it is multiplied by 1 (`none`),"
        " sqrt(B/1000) (`sqrt`) or B/1000 (`linear`), a scaled lr reached by a linear warm-up over the first"
        " epoch; `auto`: the rule measured best (docs/training.md)",
        default=LrScaling.auto,
        default_doc="`auto` = `none`: on WordNet at 10 epochs and B = 10k (docs/benchmarks.md#large-batches),"
        " Adagrad at the config's lr reached filtered MRR 0.594 against sqrt scaling with warm-up 0.567 (PBG at"
        " B = 1000: 0.577), and 0.560 against sqrt 0.515 and linear 0.428 with 1000 in-batch negatives shared"
        " by the batch: Adagrad's normalisation already absorbs the batch size; at B = 30k 0.578, at B = 100k 0.537"
        " (one worker, as `runtime.hogwild_workers` auto runs there); no rule is measured to reach PBG's MRR at 100k",
        ext=True,
    )

    def __attrs_post_init__(self) -> None:
        exactly_one(self, _OPT_GROUP, "optimizer")

    @property
    def kind(self) -> str:
        return next(name for name in _OPT_GROUP if getattr(self, name) is not None)

    @property
    def params(self) -> SgdConfig | AdamConfig | AdagradConfig | RowAdagradConfig:
        return getattr(self, self.kind)

    def lr_at(self, step: int) -> float:
        """The schedule when one is given, else the optimizer's own constant ``lr``."""
        return self.learning_rate.at(step) if self.learning_rate is not None else self.params.lr

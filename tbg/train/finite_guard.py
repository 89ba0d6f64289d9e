"""Never commit garbage: a non-finite loss or parameter stops training with one line naming the step and the
table, before anything after the last good checkpoint is written.

The checks suit a GPU: each step group leaves one small device tensor (its batches' losses, the sum of each
table's update and of the relation parameters) and nothing is read back per step.  The trainer calls
:meth:`FiniteGuard.check` where the host waits for the device anyway (a training log record, validation, a
checkpoint, the end of a bucket), before it writes anything.  One fp32 sum per tensor answers: it is NaN or
infinite when a value is, or when the values are so large (|sum| > 3e38) that the next products overflow
anyway; both are garbage.  (A gather of the updated rows, or a float64 sum, cost several times more.)

A finite update can still overflow a table (fp16 storage beyond 65504, say): the next step that reads those
rows then has a non-finite loss, and :func:`check_tables` verifies every table (and the relation parameters)
before a checkpoint or a swap file holds it, so nothing non-finite is ever written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tbg.errors import NonFiniteError
from tbg.train.gathered_rows import TableKey

RELATIONS = "relations"  # label of the relation parameters among a group's updates


def finite_sum(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-dim fp32 device tensor that is non-finite when a value of ``tensor`` is (or their sum overflows)."""
    return tensor.sum(dtype=torch.float32)


def describe(what: TableKey | str) -> str:
    if what == RELATIONS:
        return "relation parameters"
    etype, part = what
    return f"table {etype!r} partition {part}"


@dataclass
class GroupChecks:
    """What one step group leaves: ``values`` = its losses (steps first..first+losses-1), then one sum per
    updated table (``updated``, applied at the group's last step)."""

    first_step: int
    losses: int
    updated: list[TableKey | str]
    bucket: tuple[int, int]
    values: torch.Tensor  # fp32 [losses + len(updated)], on the device

    def blame(self, index: int) -> tuple[int, str]:
        """(step, what) of entry ``index``."""
        if index < self.losses:
            i, j = self.bucket
            return self.first_step + index, f"loss (bucket {i}_{j})"
        return self.first_step + self.losses - 1, f"values in {describe(self.updated[index - self.losses])}"


class FiniteGuard:
    """Collects step groups' checks on the device; :meth:`check` reads them back in one transfer."""

    def __init__(self) -> None:
        self._pending: list[GroupChecks] = []

    def add(self, checks: GroupChecks) -> None:
        self._pending.append(checks)

    def check(self, committed: Callable[[], str]) -> None:
        """Raise :class:`NonFiniteError` naming the first non-finite step and table since the last check;
        ``committed()`` says what stays the latest checkpoint (asked only then)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        finite = torch.isfinite(torch.cat([c.values for c in pending])).cpu()
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0])
        for group in pending:
            if first < group.values.shape[0]:
                step, what = group.blame(first)
                raise NonFiniteError(stopped(step, f"non-finite {what}", committed))
            first -= group.values.shape[0]


def check_tables(tables: dict[TableKey | str, list[torch.Tensor]], step: int, committed: Callable[[], str]) -> None:
    """Raise :class:`NonFiniteError` naming the first table (or the relation parameters) holding a non-finite
    value; one reduction per tensor, one read-back for all."""
    labels = [key for key, tensors in tables.items() for _ in tensors]
    sums = [finite_sum(t) for tensors in tables.values() for t in tensors]
    if not sums:
        return
    finite = torch.isfinite(torch.stack(sums)).cpu()
    if not bool(finite.all()):
        what = labels[int((~finite).nonzero()[0])]
        raise NonFiniteError(stopped(step, f"non-finite values in {describe(what)}", committed))


def stopped(step: int, problem: str, committed: Callable[[], str]) -> str:
    return (
        f"step {step}: {problem}; training stopped before committing it ({committed()});"
        " lower the learning rates or check the loss and the input weights"
    )

"""The partition buffer: which partitions stay resident between buckets, and what a bucket order costs.

A *unit* is what a bucket change can make resident: on a *shared* grid (partition index i names the same
tables on both sides, e.g. one entity type) the index i; otherwise an lhs index ``(0, i)`` or an rhs index
``(1, j)``.  A side with one partition has no units (its tables never swap).  With a budget
(``runtime.memory_budget``) the store holds ``slots`` units, more than a bucket's own two when the budget has
room (tbg/memory.py ``MemoryPlan.buffer_slots``); which ones stay follows Belady's rule, as in Marius's
partition buffer: keep the units needed soonest, since the epoch's order is known in advance.  ``slots``
None: as many units as a bucket has (PBG's footprint, a run without a budget).

A *swap* is a unit made resident.  :func:`swaps` counts them for an order (Belady eviction) and
:func:`swap_lower_bound` is the fewest any order can have: with ``c`` slots on a shared grid of P, the first
``c`` resident units cover ``c(c-1)/2`` partition pairs and each later swap at most ``c - 1`` new ones.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

Bucket = tuple[int, int]
Unit = tuple[int, int]  # (side, index); side 0 on a shared grid


def bucket_units(bucket: Bucket, num_lhs: int, num_rhs: int, shared: bool) -> tuple[Unit, ...]:
    """The units bucket ``bucket`` needs resident."""
    i, j = bucket
    if shared and num_lhs == num_rhs:
        return () if num_lhs <= 1 else tuple(sorted({(0, i), (0, j)}))
    return tuple(u for u, n in (((0, i), num_lhs), ((1, j), num_rhs)) if n > 1)


class BufferSchedule:
    """Belady's rule over one epoch's order (plus the start of the next, when known): which resident units to
    keep at a bucket, and the next unit to read ahead."""

    def __init__(self, order: Sequence[Bucket], num_lhs: int, num_rhs: int, shared: bool) -> None:
        self.units = [bucket_units(b, num_lhs, num_rhs, shared) for b in order]
        self.width = max((len(u) for u in self.units), default=0)  # a bucket's own units (slots None)
        self._uses: dict[Unit, list[int]] = {}
        for t, units in enumerate(self.units):
            for u in units:
                self._uses.setdefault(u, []).append(t)

    def next_use(self, unit: Unit, after: int) -> float:
        """The first position after ``after`` that needs ``unit`` (inf: none in this order)."""
        uses = self._uses.get(unit, [])
        k = bisect_right(uses, after)
        return uses[k] if k < len(uses) else float("inf")

    def keep(self, t: int, resident: Iterable[Unit], slots: int | None) -> set[Unit]:
        """What is resident while bucket ``t`` trains: its own units, then the resident ones needed soonest,
        up to ``slots`` units (None: as many as a bucket has, so a diagonal bucket keeps its neighbour)."""
        own = set(self.units[t])
        slots = self.width if slots is None else slots
        others = sorted((u for u in set(resident) - own), key=lambda u: (self.next_use(u, t), u))
        room = max(0, slots - len(own))
        return own | {u for u in others[:room] if self.next_use(u, t) != float("inf")}

    def next_loads(self, t: int, resident: Iterable[Unit]) -> list[Unit]:
        """The units not in ``resident`` that the first bucket after ``t`` needing any such unit needs."""
        have = set(resident)
        for pos in range(t + 1, len(self.units)):
            missing = [u for u in self.units[pos] if u not in have]
            if missing:
                return missing
        return []


def swaps(
    order: Sequence[Bucket],
    num_lhs: int,
    num_rhs: int,
    shared: bool,
    start: Bucket | None = None,
    slots: int | None = None,
) -> int:
    """Units made resident along ``order`` under Belady eviction with ``slots`` (from ``start``'s units
    resident; None: nothing resident)."""  # fmt: skip
    schedule = BufferSchedule(order, num_lhs, num_rhs, shared)
    resident = set(bucket_units(start, num_lhs, num_rhs, shared)) if start is not None else set()
    count = 0
    for t in range(len(order)):
        count += len(set(schedule.units[t]) - resident)
        resident = schedule.keep(t, resident | set(schedule.units[t]), slots)
    return count


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def swap_lower_bound(
    num_lhs: int, num_rhs: int, shared: bool, first_epoch: bool = True, slots: int | None = None
) -> int:
    """The fewest swaps of any order of one epoch (``first_epoch``: nothing resident at its start; otherwise
    a full buffer, or the previous bucket's units, is).

    ``c`` resident units (``slots``, at least a bucket's own) cover ``c(c-1)/2`` pairs of a shared grid of P
    (both diagonals come free) and each later swap at most ``c - 1`` new ones; off a shared grid ``a`` lhs and
    ``b`` rhs units cover ``a·b`` buckets, and a swap at most ``c - 1`` new ones.  Every unit is loaded at
    least once in a first epoch."""
    if shared and num_lhs == num_rhs:
        p = num_lhs
        if p <= 1:
            return 0
        c = min(p, max(2, slots or 2))
        total, covered = p * (p - 1) // 2, c * (c - 1) // 2
        later = _ceil_div(max(0, total - covered), c - 1)
        return max(p, c + later) if first_epoch else later
    sides = [n for n in (num_lhs, num_rhs) if n > 1]
    if not sides:
        return 0
    if len(sides) == 1:  # one unit per bucket: each loaded once, c of them already there in a later epoch
        c = min(sides[0], max(1, slots or 1))
        return sides[0] if first_epoch else max(0, sides[0] - c)
    cells = num_lhs * num_rhs
    c = min(num_lhs + num_rhs, max(2, slots or 2))
    covered = max(a * (c - a) for a in range(1, c) if a <= num_lhs and c - a <= num_rhs)
    later = _ceil_div(max(0, cells - covered), c - 1)
    return max(num_lhs + num_rhs, c + later) if first_epoch else later

"""Swaps per epoch against their lower bound, and the partition traffic behind them (metrics.jsonl records).

At each epoch's end the trainer books an ``epoch`` record: ``swaps`` (partition indices made resident by the
epoch's bucket order under the partition buffer's Belady eviction, tbg/train/partition_buffer.py; from the
previous epoch's last bucket, so a later epoch's count is an upper bound), ``swap_lower_bound`` (the fewest
any order could have with as many ``buffer_slots``),
and what the partition store measured over the epoch: ``partition_loads``, ``bytes_read``,
``bytes_written`` and ``io_wait_s`` (main-thread time spent waiting for partition I/O).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tbg.train.partition_buffer import swap_lower_bound, swaps
from tbg.train.partition_store import IOStats

Bucket = tuple[int, int]


class SwapReport:
    def __init__(
        self,
        grid: tuple[int, int],
        shared: bool,
        order: Callable[[int], tuple[list[Bucket], int | None]],
        stats: IOStats,
    ) -> None:
        self.grid = grid
        self.shared = shared
        self.order = order
        self.stats = stats
        self.epochs: list[dict[str, Any]] = []
        self._epoch: int | None = None
        self._since = stats.snapshot()

    def record(self, epoch: int) -> dict[str, Any]:
        """The ``epoch`` record of a finished epoch, with the store's traffic since the previous record."""
        order, slots = self.order(epoch)
        start = self.order(epoch - 1)[0][-1] if epoch > 0 else None
        now = self.stats.snapshot()
        delta = {k: now[k] - self._since[k] for k in now}
        self._since = now
        pl, pr = self.grid
        rec: dict[str, Any] = {
            "epoch_end": epoch,
            "swaps": swaps(order, pl, pr, self.shared, start, slots),
            "swap_lower_bound": swap_lower_bound(pl, pr, self.shared, first_epoch=epoch == 0, slots=slots),
            "buffer_slots": slots,
            "partition_loads": int(delta["loads"]),
            "bytes_read": int(delta["bytes_read"]),
            "bytes_written": int(delta["bytes_written"]),
            "io_wait_s": round(float(delta["wait_s"]), 3),
        }
        self.epochs.append(rec)
        return rec

    def observe(self, epoch: int, write: Callable[[dict[str, Any]], None]) -> None:
        """Called as the cursor moves (``epoch``: the epoch of the next batch): books the epochs that ended
        since the last call; the first call only notes where the run starts."""
        if self._epoch is None:
            self._epoch = epoch
            return
        while self._epoch < epoch:
            write(self.record(self._epoch))
            self._epoch += 1

"""Which copies of the shared partitions a trainer may use: generations, kept partitions, reads ahead.

Every write of a partition to the shared swap dir (or the URL save_dir) is followed, before its lease is
released, by adding 1 to its generation counter ``gen/<type>_<p>`` in the store (per attempt, like every key:
a restart begins at generation 0 with nothing resident, from the committed version's files).  A trainer notes
the generation of each copy it holds; after leasing a bucket it compares: an equal generation means nobody
wrote the partition since, so the copy is the truth and is used as it is.

- **Kept partitions.** A trained bucket's partitions are written back (the round's commit links those files:
  a bucket is committed with both of its partitions, so a lost trainer costs at most its round) and then stay
  resident, clean.  The trainer's next lease prefers buckets sharing one; if the generation still matches, the
  read is saved.  Writes cannot be saved the same way: a bucket whose partition stayed only in memory could
  not be marked done in the round's commit, and its other partition's file would then hold a bucket that a
  restart trains again.
- **Reads ahead.** While a bucket trains, the partitions of the likely next lease (the first remaining bucket
  that shares a partition with this one, else the first remaining one) are read in the background, unless
  another trainer holds their lock then or kept them from its last bucket (``kept/<type>_<p>``, a hint: it
  will likely lease them next).  The generation is read before the file is opened and checked after the
  lease: a writer renames its file before it adds to the generation, so a match means the file read was the
  current one; otherwise the read is dropped.  Only with a shared file system save_dir (a URL save_dir
  downloads after the lease).
"""

from __future__ import annotations

import os
from typing import Any

from tbg.distributed.leases import Coordinator
from tbg.train.gathered_rows import TableKey
from tbg.train.partition_store import PartitionStore

COUNTS = ("uses", "kept", "read_ahead", "fresh", "reads", "wasted", "writes")


def lock_name(key: TableKey) -> str:
    return f"{key[0]}_{key[1]}"


class SharedPartitions:
    def __init__(self, store: PartitionStore, coord: Coordinator, remote: Any) -> None:
        self.store = store
        self.coord = coord
        self.remote = remote  # tbg/remote_save_dir.RemoteSaveDir or None
        self._gens: dict[TableKey, int] = {}  # generation of our copy (resident, read ahead, or cached file)
        self._ahead: set[TableKey] = set()
        self.counts = dict.fromkeys(COUNTS, 0)  # partition uses and where they came from, this trainer
        self.bytes = {"partitions_read": 0, "partitions_written": 0}

    def generation(self, key: TableKey) -> int:
        return self.coord.add(f"gen/{lock_name(key)}", 0)

    def current(self, keys: list[TableKey]) -> None:
        """Make our copies of ``keys`` current (after their lease, or at rank 0's commit): drop resident copies
        and reads ahead another trainer's write made stale; a URL save_dir downloads changed files."""
        for key in keys:
            gen = self.generation(key)
            if gen == self._gens.get(key, 0):
                continue
            if key in self._ahead:
                self.counts["wasted"] += 1
                self._ahead.discard(key)
            self.store.discard([key])
            if self.remote is not None:
                self.remote.get(f"partitions/{lock_name(key)}.h5", self.store.swap_path(key))
            self._gens[key] = gen
        self.store.adopt_shared(keys)

    def lease(self, keys: list[TableKey]) -> None:
        """Before a leased bucket's ``need``: current copies, and the tally of where each partition comes from."""
        self.current(keys)
        for key in keys:
            self.counts["uses"] += 1
            ahead = key in self._ahead
            self._ahead.discard(key)
            if key in self.store.resident:
                self.counts["kept"] += 1
            elif ahead and self.store.reading(key):
                self.counts["read_ahead"] += 1
            else:
                self.counts["wasted"] += ahead
                if key in self.store.sources:
                    self._read(key)
                else:
                    self.counts["fresh"] += 1  # never written yet: from its seed
        self.finish()  # what was read ahead for a lease that went otherwise

    def finish(self) -> None:
        """Drop the reads ahead not used (at the next lease, and at the run's end)."""
        unused = sorted(self._ahead)
        self.counts["wasted"] += len(unused)
        self.store.discard(unused)
        self._ahead.clear()

    def _read(self, key: TableKey) -> None:
        self.counts["reads"] += 1
        self.bytes["partitions_read"] += os.path.getsize(self.store.sources[key])

    def read_ahead(self, keys: list[TableKey]) -> None:
        """Start reading ``keys`` (the likely next lease's partitions) unless resident or held by a trainer."""
        if self.remote is not None:
            return
        wanted = []
        for key in keys:
            if key in self.store.resident or key in self._ahead or self._elsewhere(key):
                continue
            self._gens[key] = self.generation(key)  # (read before the file is opened)
            self.store.discard([key])
            self.store.adopt_shared([key])
            if key in self.store.sources:
                wanted.append(key)
        for key in self.store.prefetch(wanted):
            self._ahead.add(key)
            self._read(key)

    def _elsewhere(self, key: TableKey) -> bool:
        """Whether another trainer holds ``key``'s lock now or kept it from its last bucket (it will likely
        lease it next: reading it ahead would be wasted)."""
        if self.coord.held(lock_name(key)):
            return True
        keeper = self.coord.value(f"kept/{lock_name(key)}")
        return bool(keeper) and keeper != str(self.coord.rank)

    def written(self, keys: list[TableKey]) -> None:
        """After ``write_back``: upload (URL save_dir), then the new generations; before the lease goes."""
        for key in keys:
            path = self.store.sources[key]
            self.counts["writes"] += 1
            self.bytes["partitions_written"] += os.path.getsize(path)
            if self.remote is not None:  # uploaded (atomically) before the lease goes
                self.remote.put(path, f"partitions/{lock_name(key)}.h5")
            self._gens[key] = self.coord.add(f"gen/{lock_name(key)}", 1)
            self.coord.publish(f"kept/{lock_name(key)}", str(self.coord.rank))  # (a hint for reads ahead)

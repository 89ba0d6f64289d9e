"""Resident embedding partitions, swapping to files, background prefetch and write-back, checkpoint shards.

Only the partitions the trainer needs are in memory: the current bucket's, plus those the partition buffer
keeps under a budget (P=1: everything, nothing swapped).  A partition
not resident lives in exactly one immutable file, its *source*: a checkpoint shard (after resume or warm
start) or ``save_dir/partitions/<type>_<p>.h5`` (written by temp + rename when evicted, so a checkpoint
can hard-link it).  Partitions that have no source yet are created from their seed on first use.

Partition I/O runs on one background thread (numpy/h5py only: a torch op there would give the thread its own
OpenMP team), in submission order: an evicted partition is written back while the next bucket trains, and the
next partitions to load are read ahead.  ``capacity`` (bytes, from the memory plan: tbg/memory.py) bounds
what the store holds: resident + being read + being written back (a write-back holds its tables until it is
booked), so a read ahead is admitted when all of them and its size fit.  The trainer may keep partitions
resident beyond the bucket's own (``need``'s keys: the partition buffer, tbg/train/partition_buffer.py).
Without ``overlap`` (a budget too tight
for in-flight partitions) every write-back is waited for and nothing is read ahead.  The values trained are
the same either way (a partition written back and read again is bit-identical).
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch

from tbg.checkpoint import CheckpointWriter, read_embedding_file, write_embedding_file
from tbg.config import Config, EmbeddingTableConfig
from tbg.consistency import check_shard
from tbg.graph import PartitionLayout
from tbg.memory import row_bytes
from tbg.model.embeddings import init_partition, storage_dtype
from tbg.model.optimizers import SparseOptimizer, build_sparse_optimizer
from tbg.runtime import hugepage_array, hugepage_empty
from tbg.train.batch_scorer import TableKey
from tbg.train.pinned_staging import STAGING_BYTES, PinnedStaging

SWAP_DIR = "partitions"


@dataclass
class Resident:
    table: torch.Tensor
    optimizer: SparseOptimizer
    dirty: bool = False  # changed since read from its source


@dataclass
class IOStats:
    """Partition traffic so far (main thread only)."""

    loads: int = 0  # partitions made resident from their file, or created
    reads: int = 0  # of those, read from a file
    bytes_read: int = 0
    writes: int = 0  # partitions written back (evicted while changed)
    bytes_written: int = 0
    wait_s: float = 0.0  # main-thread time spent waiting for partition I/O

    def snapshot(self) -> dict[str, float]:
        return asdict(self)


Loaded = tuple[np.ndarray | torch.Tensor | None, dict[str, np.ndarray]]  # None: fresh partition


class PartitionStore:
    def __init__(
        self,
        cfg: Config,
        counts: dict[str, int],
        sizes: dict[TableKey, int],
        device: torch.device,
        swap_dir: str,
        capacity: int | None = None,
        overlap: bool = True,
    ) -> None:
        self.tables: dict[str, EmbeddingTableConfig] = {t.name: t for t in cfg.model.embeddings.tables}
        self.counts = counts  # entities per type (the init scale uses the whole type's count)
        self.sizes = sizes  # rows per (type, partition)
        self.device = device
        self.seed = cfg.runtime.seed
        self.swap_dir = swap_dir
        self.capacity = capacity
        self.overlap = overlap
        self.resident: dict[TableKey, Resident] = {}
        self.sources: dict[TableKey, str] = {}
        self.stats = IOStats()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tbg-partition-io")
        self._pending: dict[TableKey, Future[Loaded]] = {}
        self._evicting: dict[TableKey, tuple[Future[None], Resident, str]] = {}
        self._weights_only: set[TableKey] = set()  # warm start: ignore the shard's optimizer state
        self._partial: dict[TableKey, int] = {}  # warm start on a grown graph: rows the source shard holds
        self._staging: PinnedStaging | None = None  # CUDA: bounded pinned buffers for host -> device copies

    @property
    def keys(self) -> list[TableKey]:
        return sorted(self.sizes)

    def nbytes(self, key: TableKey) -> int:
        """A partition's bytes with its optimizer state (as the memory plan counts them)."""
        return self.sizes[key] * row_bytes(self.tables[key[0]])

    def held(self) -> int:
        """Bytes of partitions resident, being read and being written back."""
        keys = [*self.resident, *self._pending, *self._evicting]
        return sum(self.nbytes(k) for k in keys)

    # ------------------------------------------------------------------ loading
    def read(self, key: TableKey) -> Loaded:
        """A non-resident partition's current table and state (e.g. for validation ranking); main thread."""
        if key in self._evicting:
            res = self._evicting[key][1]
            return res.table, res.optimizer.state_arrays()
        emb, state = self._read(key, self.sources.get(key), key not in self._weights_only)
        if emb is None:
            return self._initial(key), state
        if key in self._partial:
            table = self._grown(key, emb)  # type: ignore[arg-type]
            optimizer = build_sparse_optimizer(table, self.tables[key[0]].optimizer)
            return table, _grown_state(optimizer.state_arrays(), state, self._partial[key])
        return emb, state

    def _grown(self, key: TableKey, emb: np.ndarray) -> torch.Tensor:
        """A partition of a grown graph from a shard of its earlier state: the shard's rows (the entities it had
        keep their offsets), then the initial rows of the entities the append added."""
        table = self._initial(key)
        table[: emb.shape[0]] = torch.from_numpy(np.ascontiguousarray(emb)).to(table.dtype)
        return table

    def _initial(self, key: TableKey, out: torch.Tensor | None = None) -> torch.Tensor:
        etype, part = key
        return init_partition(self.tables[etype], self.counts[etype], self.sizes[key], self.seed, part, out)

    def _read(self, key: TableKey, source: str | None, with_optimizer: bool) -> Loaded:
        """Table and optimizer state from ``source``, or None for a fresh seeded partition (initialised by
        _install on the main thread).  Runs on the I/O thread: numpy/h5py only, into huge-page arrays."""
        if source is None:
            return None, {}
        alloc = hugepage_array if self.device.type == "cpu" else None
        emb, state = read_embedding_file(source, with_optimizer=with_optimizer, alloc=alloc)
        rows, dim = self._partial.get(key, self.sizes[key]), self.tables[key[0]].embedding_dim
        check_shard(source, emb.shape, (rows, dim))
        return emb, state

    def _submit_read(self, key: TableKey) -> Future[Loaded]:
        return self._io.submit(self._read, key, self.sources.get(key), key not in self._weights_only)

    def _install(self, key: TableKey, loaded: Loaded) -> None:
        emb, state = loaded
        table = self.tables[key[0]]
        partial = self._partial.pop(key, None) if emb is not None else None
        if emb is None and self.device.type == "cpu" and storage_dtype(table) == torch.float32:
            # a fresh table is initialised straight into its huge-page buffer, never held twice
            tensor = self._initial(key, hugepage_empty((self.sizes[key], table.embedding_dim), torch.float32))
        elif partial is not None:
            tensor = self._placed(key, self._grown(key, emb))  # type: ignore[arg-type]
        else:
            tensor = self._placed(key, self._initial(key) if emb is None else emb)
        if partial is None:
            optimizer = build_sparse_optimizer(tensor, table.optimizer, state)  # (CPU: adopts the arrays read)
        else:
            optimizer = build_sparse_optimizer(tensor, table.optimizer)
            optimizer.load_state(_grown_state(optimizer.state_arrays(), state, partial))
        # a grown partition differs from its source shard: dirty, so eviction writes the whole table
        self.resident[key] = Resident(tensor, optimizer, dirty=key not in self.sources or partial is not None)
        self.stats.loads += 1
        if emb is not None:
            self.stats.reads += 1
            self.stats.bytes_read += emb.nbytes + sum(a.nbytes for a in state.values())

    def _placed(self, key: TableKey, emb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A table in its storage dtype on the device (CPU: the huge-page array read, adopted; else a copy)."""
        tensor = emb if isinstance(emb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(emb))
        dtype = storage_dtype(self.tables[key[0]])
        if self.device.type == "cuda":
            if self._staging is None:
                self._staging = PinnedStaging(STAGING_BYTES)
            return self._staging.to_device(tensor.to(dtype), self.device)
        if isinstance(emb, np.ndarray) and tensor.dtype == dtype:
            return tensor
        return hugepage_empty(tuple(tensor.shape), dtype).copy_(tensor)

    def prefetch(self, keys: list[TableKey]) -> list[TableKey]:
        """Start reading partitions that are not resident, read or written back, as far as capacity allows;
        the keys whose read started."""
        self._reap()
        started: list[TableKey] = []
        if not self.overlap:
            return started
        for key in keys:
            if key in self.resident or key in self._pending or key in self._evicting:
                continue
            if self.capacity is not None and self.held() + self.nbytes(key) > self.capacity:
                continue  # read later (once a write-back has freed its memory), or when needed
            self._pending[key] = self._submit_read(key)
            started.append(key)
        return started

    def need(self, keys: list[TableKey]) -> None:
        """Make exactly ``keys`` resident: evict the others (written back in the background), then install the
        missing ones (read ahead, taken back from a write-back in flight, or read now)."""
        wanted = set(keys)
        for key in [k for k in self.resident if k not in wanted]:
            self._evict(key)
        for key in sorted(wanted):
            if key in self.resident:
                continue
            if key in self._evicting:  # still in memory: wait for its file, then keep using the tensors
                future, res, path = self._evicting.pop(key)
                self._wait(future)
                self._committed(key, path)
                self.resident[key] = Resident(res.table, res.optimizer, dirty=False)
                continue
            future = self._pending.pop(key, None)
            self._install(key, self._wait(future if future is not None else self._submit_read(key)))
        if not self.overlap:
            self.drain()
        self._reap()

    def _wait(self, future: Future) -> object:
        started = time.perf_counter()
        try:
            return future.result()
        finally:
            self.stats.wait_s += time.perf_counter() - started

    def _evict(self, key: TableKey) -> None:
        res = self.resident.pop(key)
        if res.dirty or key not in self.sources:
            os.makedirs(self.swap_dir, exist_ok=True)
            path = self.swap_path(key)
            emb, state = res.table.cpu().numpy(), res.optimizer.state_arrays()  # (CPU: views, no copy)
            self.stats.writes += 1
            self.stats.bytes_written += emb.nbytes + sum(a.nbytes for a in state.values())
            self._evicting[key] = (self._io.submit(write_embedding_file, path, emb, state), res, path)

    def _committed(self, key: TableKey, path: str) -> None:
        self.sources[key] = path
        self._weights_only.discard(key)

    def _reap(self) -> None:
        """Book the write-backs that have finished (a failed one raises here)."""
        for key in [k for k, (f, _, _) in self._evicting.items() if f.done()]:
            future, _, path = self._evicting.pop(key)
            future.result()
            self._committed(key, path)

    def drain(self) -> None:
        """Wait for every write-back (their files are then the partitions' sources)."""
        for key in list(self._evicting):
            future, _, path = self._evicting.pop(key)
            self._wait(future)
            self._committed(key, path)

    def close(self) -> None:
        """Finish the write-backs and stop the I/O thread."""
        try:
            self.drain()
        finally:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._io.shutdown(wait=True)

    def write_back(self, keys: list[TableKey], keep: bool = False) -> None:
        """Write resident ``keys`` (when changed) and wait: their files are then the shared truth that another
        trainer may lease next (tbg/distributed/).  ``keep``: they stay resident, clean, for a next bucket that
        shares one (the caller checks that nobody wrote them since: tbg/distributed/partitions.py)."""
        kept = {k: self.resident[k] for k in keys if k in self.resident} if keep else {}
        for key in [k for k in keys if k in self.resident]:
            self._evict(key)
        self.drain()  # committed before the lease is released
        for key, res in kept.items():
            res.dirty = False
            self.resident[key] = res

    def reading(self, key: TableKey) -> bool:
        """Whether a read ahead of ``key`` was started and not yet installed."""
        return key in self._pending

    def discard(self, keys: list[TableKey]) -> None:
        """Forget clean resident copies and reads ahead of ``keys`` (another trainer has written them since)."""
        for key in keys:
            res = self.resident.get(key)
            if res is not None and res.dirty:
                raise RuntimeError(f"partition {key} has unwritten changes")
            self.resident.pop(key, None)
            future = self._pending.pop(key, None)
            if future is not None:
                future.cancel()

    def swap_path(self, key: TableKey) -> str:
        """The swap file of partition ``key`` (``<swap dir>/<type>_<p>.h5``)."""
        return os.path.join(self.swap_dir, f"{key[0]}_{key[1]}.h5")

    def adopt_shared(self, keys: list[TableKey]) -> None:
        """Take the swap files other trainers wrote as the sources of non-resident ``keys`` (distributed runs
        share the save_dir's swap dir; a file is replaced by rename, so a read sees a whole version)."""
        for key in keys:
            path = self.swap_path(key)
            if key not in self.resident and os.path.exists(path):
                self.sources[key] = path
                self._weights_only.discard(key)

    # ------------------------------------------------------------------ access
    def get(self, key: TableKey) -> Resident:
        return self.resident[key]

    def set_sources(
        self, sources: dict[TableKey, str], with_optimizer: bool = True, trained_counts: dict[str, int] | None = None
    ) -> None:
        """Start from checkpoint shards (resume/warm start); drops anything resident.  ``trained_counts``: the
        shards are of the graph before an append, with these entity counts; each partition's shard then holds
        its first rows, and the rows after them are initialised."""
        self.drain()
        for future in self._pending.values():
            future.cancel()
        self.resident.clear()
        self._partial = {}
        for etype, part in self.keys if trained_counts is not None else ():
            rows = PartitionLayout(trained_counts[etype], self.tables[etype].num_partitions).partition_size(part)
            if rows < self.sizes[(etype, part)]:
                self._partial[(etype, part)] = rows
        self._pending.clear()
        self.sources = {}
        os.makedirs(self.swap_dir, exist_ok=True)
        for key, source in sources.items():
            # link into the swap dir: pruning old checkpoints must never remove a partition's only copy
            path = self.swap_path(key)
            if not _same_file(source, path):  # (renaming a link onto the same inode would do nothing)
                tmp = f"{path}.tmp-link"
                if os.path.exists(tmp):
                    os.remove(tmp)
                try:
                    os.link(source, tmp)
                except OSError:
                    shutil.copyfile(source, tmp)
                os.replace(tmp, path)
            self.sources[key] = path
        self._weights_only = set() if with_optimizer else set(self.sources)

    def write_checkpoint(self, writer: CheckpointWriter, with_optimizer: bool = True) -> None:
        """Changed resident partitions are written; the others are hard-linked from their immutable files."""
        self.drain()
        for key in self.keys:
            res = self.resident.get(key)
            if res is not None and (res.dirty or key not in self.sources or key in self._weights_only):
                state = res.optimizer.state_arrays() if with_optimizer else None
                writer.write_embeddings(key[0], key[1], res.table.cpu().numpy(), state)
            elif key in self.sources and key not in self._partial:  # (resident and clean: equal to its file)
                writer.link_embeddings(key[0], key[1], self.sources[key])
            else:  # never trained yet: its deterministic initial value (grown: the shard's rows, then initial ones)
                emb, state = self.read(key)
                array = emb.numpy() if isinstance(emb, torch.Tensor) else emb
                writer.write_embeddings(key[0], key[1], array, state if with_optimizer and state else None)


def _grown_state(fresh: dict[str, np.ndarray], saved: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Optimizer state of a grown partition: ``saved``'s per-row state for its first ``rows`` rows, ``fresh``
    (a new optimizer's) for the rest; state that is not per row (Adam's step count) is taken as saved."""
    out = {}
    for name, init in fresh.items():
        have = saved.get(name)
        if have is None:
            continue
        if have.shape[1:] == init.shape[1:] and have.shape[0] == rows and init.shape[0] > rows:
            merged = init.copy()
            merged[:rows] = have
            out[name] = merged
        elif have.shape == init.shape:
            out[name] = have
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except FileNotFoundError:
        return False


def remove_swap_leftovers(swap_dir: str) -> None:
    """Remove temp files an interrupted run left in the swap dir (``*.tmp-*``); the save_dir's lock holder
    calls this before training, when no other writer can be using them."""
    if not os.path.isdir(swap_dir):
        return
    for name in os.listdir(swap_dir):
        if ".tmp-" in name:
            os.remove(os.path.join(swap_dir, name))

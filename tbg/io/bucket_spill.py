"""Route edges to per-bucket spill files, then write each bucket shuffled.

Each batch is located (dense id -> partition, offset), sorted by bucket with a radix sort on a uint16 key
and appended as packed records to ``<spill>/<i>_<j>.rec``.  Routed records are held until they reach
``SPILL_BUFFER_BYTES`` and then appended bucket by bucket (one open and one write per bucket, not one per
bucket per batch), so memory is that buffer plus one batch, whatever the input's size.  A bucket is then loaded,
permuted with a seeded RNG and written through :class:`tbg.graph.GraphWriter`.  A bucket larger than
``block_edges`` is shuffled externally (Rao's two-pass shuffle): every record goes to one of K random bins,
each bin is permuted in memory and the bins are written one after another.  That is an exactly uniform
permutation with memory bounded by a bin, not by the bucket.
"""

from __future__ import annotations

import itertools
import os
import shutil
import zlib

import numpy as np

from tbg.graph import BucketWriter, EdgeArrays, GraphWriter, PartitionLayout
from tbg.io.phases import PhaseClock


class ShuffledType:
    """An entity type during import: its partition layout and where each dense id lands.

    ``position`` (dense id -> shuffled position) is turned once into each id's (partition, offset), packed
    into one integer (partition above the offset's bits: uint32 when both fit, as for 18 partitions of 670k),
    so placing a batch is one gather from a table of 4 (or 8) bytes per entity, and the bucket key and the
    offsets are a shift and a mask of the gathered values.
    """

    def __init__(self, name: str, layout: PartitionLayout, position: np.ndarray) -> None:
        self.name, self.layout = name, layout
        self._position: np.ndarray | None = None
        self._packed: np.ndarray | None = None
        self._shift = 0
        parts = layout.num_partitions
        shift = max(1, int(layout.max_partition_size - 1).bit_length())
        bits = shift + int(parts - 1).bit_length()
        if parts > 1 and bits <= 63:
            dtype = np.uint32 if bits <= 32 else np.int64
            part, off = layout.locate(position)
            packed = part.astype(dtype)
            packed <<= dtype(shift)
            packed |= off.astype(dtype)
            self._packed, self._shift, self._mask = packed, dtype(shift), dtype((1 << shift) - 1)
        else:  # unpartitioned (offset = position), or offsets too wide to pack: locate per batch
            self._position = position

    @staticmethod
    def permutation(name: str, count: int, seed: int) -> np.ndarray:
        """The type's seeded uniform shuffle: ``perm`` (position -> dense id)."""
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        return rng.permutation(count).astype(np.int64)

    def placed(self, ids: np.ndarray) -> np.ndarray:
        """Where dense ids land, in a form :meth:`partition` and :meth:`offset` read (one gather)."""
        return self._packed[ids] if self._packed is not None else self._position[ids]  # type: ignore[index]

    def partition(self, placed: np.ndarray) -> np.ndarray | None:
        """The partitions of :meth:`placed` values (None when unpartitioned)."""
        if self._packed is not None:
            return placed >> self._shift
        return None if self.layout.num_partitions == 1 else self.layout.locate(placed)[0]

    def offset(self, placed: np.ndarray) -> np.ndarray:
        """The offsets inside their partitions of :meth:`placed` values."""
        if self._packed is not None:
            return placed & self._mask
        return placed if self.layout.num_partitions == 1 else self.layout.locate(placed)[1]

    def place(self, ids: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(partition, or None when unpartitioned; offset inside the partition) of dense ids."""
        placed = self.placed(ids)
        return self.partition(placed), self.offset(placed)


SPILL_BUFFER_BYTES = 32 << 20  # routed records held before they are appended to the spill files


def record_dtype(offset: np.dtype, rel: np.dtype, has_weight: bool) -> np.dtype:
    fields = [("lhs", offset), ("rhs", offset), ("rel", rel)]
    if has_weight:
        fields.append(("weight", np.float32))
    return np.dtype(fields)


def _single(types: list[ShuffledType]) -> ShuffledType | None:
    """The one type of every relation's side, or None when the relations' types differ."""
    return types[0] if all(t is types[0] for t in types) else None


class BucketRouter:
    """Appends edges of one split to per-bucket record files and writes the shuffled buckets at the end."""

    def __init__(
        self,
        spill_dir: str,
        lhs_types: list[ShuffledType],
        rhs_types: list[ShuffledType],
        dtype: np.dtype,
        clock: PhaseClock | None = None,
        buffer_bytes: int = SPILL_BUFFER_BYTES,
    ) -> None:
        self.spill_dir = spill_dir
        self.clock = clock if clock is not None else PhaseClock()
        os.makedirs(spill_dir, exist_ok=True)
        self.lhs_types, self.rhs_types, self.dtype = lhs_types, rhs_types, dtype
        self.grid = (
            max(t.layout.num_partitions for t in lhs_types),
            max(t.layout.num_partitions for t in rhs_types),
        )
        self.counts = np.zeros(self.grid, dtype=np.int64)
        self.buffer_bytes = buffer_bytes
        self._pending: dict[tuple[int, int], list[np.ndarray]] = {}  # records not yet in their spill file
        self._pending_bytes = 0

    def _locate(self, types: list[ShuffledType], ids: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray | None, ...]:
        single = _single(types)
        if single is not None:
            return single.place(ids)
        distinct = {id(t): t for t in types}
        kind = np.array([list(distinct).index(id(t)) for t in types], dtype=np.int64)[rel]
        part = np.zeros(len(ids), dtype=np.int64)
        off = np.empty(len(ids), dtype=np.int64)
        for k, t in enumerate(distinct.values()):
            mask = kind == k
            p, o = t.place(ids[mask])
            off[mask] = o
            if p is not None:
                part[mask] = p
        return part, off

    def add(self, lhs: np.ndarray, rhs: np.ndarray, rel: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Route a batch of edges given by dense ids."""
        n = len(lhs)
        if n == 0:
            return
        nl, nr = self.grid
        with self.clock("route"):
            lside, rside = _single(self.lhs_types), _single(self.rhs_types)
            if nl * nr > 1 and lside is not None and rside is not None:  # one type a side: offsets after the sort
                loff, roff = lside.placed(lhs), rside.placed(rhs)
                lpart, rpart = lside.partition(loff), rside.partition(roff)
            else:
                lside = rside = None
                lpart, loff = self._locate(self.lhs_types, lhs, rel)
                rpart, roff = self._locate(self.rhs_types, rhs, rel)
            rec = np.empty(n, dtype=self.dtype)
            if nl * nr == 1:
                rec["lhs"], rec["rhs"], rec["rel"] = loff, roff, rel
                if weight is not None:
                    rec["weight"] = weight
                sizes = np.array([n], np.int64)
            else:
                key = np.zeros(n, dtype=np.uint16 if nl * nr <= 1 << 16 else np.int64)
                if lpart is not None:
                    key += (lpart * nr).astype(key.dtype)
                if rpart is not None:
                    key += rpart.astype(key.dtype)
                order = np.argsort(key, kind="stable")  # radix sort for uint16 keys: O(n)
                if lside is None:
                    rec["lhs"], rec["rhs"] = loff[order], roff[order]
                else:  # offsets taken from the placed values once in bucket order (one gather per side)
                    rec["lhs"], rec["rhs"] = lside.offset(loff[order]), rside.offset(roff[order])
                rec["rel"] = rel[order]
                if weight is not None:
                    rec["weight"] = weight[order]
                sizes = np.bincount(key, minlength=nl * nr)
        with self.clock("spill_write"):
            ends = np.cumsum(sizes)
            for b in np.flatnonzero(sizes).tolist():
                bucket = divmod(b, nr)
                self._pending.setdefault(bucket, []).append(rec[ends[b] - sizes[b] : ends[b]])
            self.counts.reshape(-1)[: len(sizes)] += sizes
            self._pending_bytes += rec.nbytes
            if self._pending_bytes >= self.buffer_bytes:
                self._flush()

    def _flush(self) -> None:
        """Append every bucket's pending records to its spill file: one open and one write per bucket."""
        for bucket, parts in self._pending.items():
            with open(self._spill_path(bucket), "ab") as fh:
                views = [memoryview(p).cast("B") for p in parts]
                fh.write(views[0] if len(views) == 1 else b"".join(views))
        self._pending.clear()
        self._pending_bytes = 0

    def _spill_path(self, bucket: tuple[int, int]) -> str:
        return os.path.join(self.spill_dir, f"{bucket[0]}_{bucket[1]}.rec")

    def finish(self, writer: GraphWriter, split: str, seed: int, block_edges: int) -> dict[str, int]:
        """Write every non-empty bucket of ``split`` shuffled; returns {"i_j": count}; removes the spill files.

        A bucket that fits ``block_edges`` is loaded and permuted on a helper thread while the one before it
        is written (numpy releases the GIL; h5py does not), so the two overlap on two cores.  Each bucket has
        its own seeded RNG, so the result does not depend on that overlap.
        """
        from concurrent.futures import ThreadPoolExecutor

        with self.clock("spill_write"):
            self._flush()
        out: dict[str, int] = {}
        buckets = [(int(i), int(j)) for i, j in zip(*np.nonzero(self.counts))]
        small = [b for b in buckets if self.counts[b] <= block_edges]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tbg-import-shuffle") as pool:
            ahead = iter(small)
            futures = {}
            for b in itertools.islice(ahead, 2):  # at most two buckets loaded ahead of the one being written
                futures[b] = pool.submit(self._load_shuffled, b, seed)
            for i, j in buckets:
                count = int(self.counts[i, j])
                if count <= block_edges:
                    with self.clock("shuffle_wait"):
                        edges = futures.pop((i, j)).result()
                    for b in itertools.islice(ahead, 1):
                        futures[b] = pool.submit(self._load_shuffled, b, seed)
                    with self.clock("bucket_write"):
                        writer.write_bucket(split, i, j, edges)
                    del edges
                else:
                    rng = np.random.default_rng([seed, i, j])
                    dtypes = {name: self.dtype[name] for name in self.dtype.names}
                    with writer.bucket_writer(split, i, j, count, dtypes) as out_bucket:
                        self._external_shuffle(self._spill_path((i, j)), out_bucket, count, rng, block_edges)
                with self.clock("spill_write"):
                    os.remove(self._spill_path((i, j)))
                out[f"{i}_{j}"] = count
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        return out

    def _load_shuffled(self, bucket: tuple[int, int], seed: int) -> EdgeArrays:
        """Bucket ``bucket``'s spilled records in their final (seeded, uniformly random) order."""
        with self.clock("spill_read"):
            data = np.fromfile(self._spill_path(bucket), dtype=self.dtype)
        with self.clock("shuffle"):
            rng = np.random.default_rng([seed, *bucket])
            return _take(data, random_permutation(len(data), rng))

    def _external_shuffle(
        self, spill: str, out: BucketWriter, count: int, rng: np.random.Generator, block: int
    ) -> None:
        bins = int(np.ceil(2 * count / block))  # expected bin = block/2 edges: headroom for variance
        bin_dir = spill + ".bins"
        os.makedirs(bin_dir, exist_ok=True)
        handles = [open(os.path.join(bin_dir, str(k)), "wb") for k in range(bins)]  # noqa: SIM115
        try:
            itemsize = self.dtype.itemsize
            with open(spill, "rb") as src, self.clock("shuffle"):
                while True:
                    raw = src.read(block * itemsize)
                    if not raw:
                        break
                    data = np.frombuffer(raw, dtype=self.dtype)
                    key = rng.integers(0, bins, size=len(data), dtype=np.uint16 if bins <= 1 << 16 else np.int64)
                    order = np.argsort(key, kind="stable")
                    sizes = np.bincount(key, minlength=bins)
                    ends = np.cumsum(sizes)
                    sorted_data = _take_records(data, order)
                    for k in np.flatnonzero(sizes):
                        handles[k].write(memoryview(sorted_data[ends[k] - sizes[k] : ends[k]]).cast("B"))
        finally:
            for fh in handles:
                fh.close()
        for k in range(bins):
            with self.clock("shuffle"):
                data = np.fromfile(os.path.join(bin_dir, str(k)), dtype=self.dtype)
                edges = _take(data, random_permutation(len(data), rng))
            with self.clock("bucket_write"):
                out.append(edges)
        shutil.rmtree(bin_dir, ignore_errors=True)


def random_permutation(n: int, rng: np.random.Generator, bin_size: int = 1 << 15) -> np.ndarray:
    """A uniform random permutation, cache-friendly: random bins (radix sort), then a shuffle per bin.

    Assigning items to random bins and shuffling each bin is an exactly uniform permutation (Rao); it is
    about twice as fast as ``rng.permutation`` on large n because each shuffle stays in cache.
    """
    if n <= 4 * bin_size:
        return rng.permutation(n)
    bins = min(1 << 16, -(-n // bin_size))
    key = rng.integers(0, bins, size=n, dtype=np.uint16)
    order = np.argsort(key, kind="stable")
    ends = np.cumsum(np.bincount(key, minlength=bins))
    start = 0
    for end in ends.tolist():
        rng.shuffle(order[start:end])  # in place on the view
        start = end
    return order


def _take(data: np.ndarray, index: np.ndarray) -> EdgeArrays:
    """Gather records field by field (contiguous int gathers are far faster than structured-record ones)."""
    cols = {name: np.ascontiguousarray(data[name])[index] for name in data.dtype.names}
    return EdgeArrays(cols["lhs"], cols["rhs"], cols["rel"], cols.get("weight"))


def _take_records(data: np.ndarray, index: np.ndarray) -> np.ndarray:
    out = np.empty(len(index), dtype=data.dtype)
    for name in data.dtype.names:
        out[name] = np.ascontiguousarray(data[name])[index]
    return out

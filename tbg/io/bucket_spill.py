"""Route edges to per-bucket spill files, then write each bucket shuffled.

Each batch is located (dense id -> partition, offset), sorted by bucket with a radix sort on a uint16 key
and appended as packed records to ``<spill>/<i>_<j>.rec``; memory is one batch.  A bucket is then loaded,
permuted with a seeded RNG and written through :class:`tbg.graph.GraphWriter`.  A bucket larger than
``block_edges`` is shuffled externally (Rao's two-pass shuffle): every record goes to one of K random bins,
each bin is permuted in memory and the bins are written one after another.  That is an exactly uniform
permutation with memory bounded by a bin, not by the bucket.
"""

from __future__ import annotations

import os
import shutil
import zlib
from dataclasses import dataclass

import numpy as np

from tbg.graph import BucketWriter, EdgeArrays, GraphWriter, PartitionLayout


@dataclass
class ShuffledType:
    """An entity type during import: its partition layout and each dense id's shuffled position."""

    name: str
    layout: PartitionLayout
    position: np.ndarray  # dense id -> shuffled position

    @staticmethod
    def permutation(name: str, count: int, seed: int) -> np.ndarray:
        """The type's seeded uniform shuffle: ``perm`` (position -> dense id)."""
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        return rng.permutation(count).astype(np.int64)

    def place(self, ids: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(partition, or None when unpartitioned; offset inside the partition) of dense ids."""
        pos = self.position[ids]
        if self.layout.num_partitions == 1:
            return None, pos
        return self.layout.locate(pos)


def record_dtype(offset: np.dtype, rel: np.dtype, has_weight: bool) -> np.dtype:
    fields = [("lhs", offset), ("rhs", offset), ("rel", rel)]
    if has_weight:
        fields.append(("weight", np.float32))
    return np.dtype(fields)


class BucketRouter:
    """Appends edges of one split to per-bucket record files and writes the shuffled buckets at the end."""

    def __init__(
        self,
        spill_dir: str,
        lhs_types: list[ShuffledType],
        rhs_types: list[ShuffledType],
        dtype: np.dtype,
    ) -> None:
        self.spill_dir = spill_dir
        os.makedirs(spill_dir, exist_ok=True)
        self.lhs_types, self.rhs_types, self.dtype = lhs_types, rhs_types, dtype
        self.grid = (
            max(t.layout.num_partitions for t in lhs_types),
            max(t.layout.num_partitions for t in rhs_types),
        )
        self.counts = np.zeros(self.grid, dtype=np.int64)
        self._files: dict[tuple[int, int], object] = {}

    def _locate(self, types: list[ShuffledType], ids: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray | None, ...]:
        distinct = {id(t): t for t in types}
        if len(distinct) == 1:
            return types[0].place(ids)
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
        lpart, loff = self._locate(self.lhs_types, lhs, rel)
        rpart, roff = self._locate(self.rhs_types, rhs, rel)
        nl, nr = self.grid
        rec = np.empty(n, dtype=self.dtype)
        if nl * nr == 1:
            rec["lhs"], rec["rhs"], rec["rel"] = loff, roff, rel
            if weight is not None:
                rec["weight"] = weight
            self._append((0, 0), rec)
            self.counts[0, 0] += n
            return
        key = np.zeros(n, dtype=np.uint16 if nl * nr <= 1 << 16 else np.int64)
        if lpart is not None:
            key += (lpart * nr).astype(key.dtype)
        if rpart is not None:
            key += rpart.astype(key.dtype)
        order = np.argsort(key, kind="stable")  # radix sort for uint16 keys: O(n)
        rec["lhs"], rec["rhs"], rec["rel"] = loff[order], roff[order], rel[order]
        if weight is not None:
            rec["weight"] = weight[order]
        sizes = np.bincount(key, minlength=nl * nr)
        ends = np.cumsum(sizes)
        for b in np.flatnonzero(sizes):
            i, j = divmod(int(b), nr)
            self._append((i, j), rec[ends[b] - sizes[b] : ends[b]])
            self.counts[i, j] += sizes[b]

    def _append(self, bucket: tuple[int, int], rec: np.ndarray) -> None:
        fh = self._files.get(bucket)
        if fh is None:
            path = self._spill_path(bucket)
            if len(self._files) < 256:
                fh = self._files[bucket] = open(path, "ab")  # noqa: SIM115 - closed in finish()
            else:
                with open(path, "ab") as once:
                    once.write(memoryview(rec).cast("B"))
                return
        fh.write(memoryview(rec).cast("B"))  # type: ignore[attr-defined]

    def _spill_path(self, bucket: tuple[int, int]) -> str:
        return os.path.join(self.spill_dir, f"{bucket[0]}_{bucket[1]}.rec")

    def finish(self, writer: GraphWriter, split: str, seed: int, block_edges: int) -> dict[str, int]:
        """Write every non-empty bucket of ``split`` shuffled; returns {"i_j": count}; removes the spill files."""
        for fh in self._files.values():
            fh.close()  # type: ignore[attr-defined]
        self._files.clear()
        out: dict[str, int] = {}
        for i, j in zip(*np.nonzero(self.counts)):
            i, j = int(i), int(j)
            rng = np.random.default_rng([seed, i, j])
            spill = self._spill_path((i, j))
            count = int(self.counts[i, j])
            if count <= block_edges:
                data = np.fromfile(spill, dtype=self.dtype)
                writer.write_bucket(split, i, j, _take(data, random_permutation(count, rng)))
            else:
                dtypes = {name: self.dtype[name] for name in self.dtype.names}
                with writer.bucket_writer(split, i, j, count, dtypes) as out_bucket:
                    self._external_shuffle(spill, out_bucket, count, rng, block_edges)
            os.remove(spill)
            out[f"{i}_{j}"] = count
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        return out

    def _external_shuffle(
        self, spill: str, out: BucketWriter, count: int, rng: np.random.Generator, block: int
    ) -> None:
        bins = int(np.ceil(2 * count / block))  # expected bin = block/2 edges: headroom for variance
        bin_dir = spill + ".bins"
        os.makedirs(bin_dir, exist_ok=True)
        handles = [open(os.path.join(bin_dir, str(k)), "wb") for k in range(bins)]  # noqa: SIM115
        try:
            itemsize = self.dtype.itemsize
            with open(spill, "rb") as src:
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
            data = np.fromfile(os.path.join(bin_dir, str(k)), dtype=self.dtype)
            out.append(_take(data, random_permutation(len(data), rng)))
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

"""Bucket edges as torch tensors, read in chunks and shuffled per epoch, prefetched in the background.

A bucket of ``n`` edges is read in chunks of ``max_edges_per_chunk`` (huge buckets never load whole).
Each chunk is permuted with a generator seeded by (seed, epoch, bucket, chunk), so the edge at a given
position of a given epoch is always the same one: a checkpoint that records (bucket, position) resumes
exactly there.

A bucket of a grown graph is several segments, each shuffled on its own (one per import/append, see
tbg/graph_manifest.py).  ``train_on: appended`` reads only the latest segment; ``all`` reads a bucket of
several segments in stratified chunks, each taking the same share of every segment, so a chunk stays an
unbiased sample of the whole bucket rather than old edges first and new ones last.

Relations of several (lhs type, rhs type) groups (e.g. typed WordNet: entity type = part of speech): each
permuted chunk is laid out as a sequence of batches that each hold one group (:func:`group_layout`, numpy on
the prefetch thread), so a batch carries its group as a Python int and the training step never inspects
device data to split it (a host sync on a GPU).  The layout is a pure function of (seed, epoch, bucket,
chunk, batch size), so positions stay exact on resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
import torch

from tbg.graph import EdgeArrays, Graph
from tbg.train.batch_scorer import Batch


@dataclass
class EdgeChunk:
    start: int  # bucket position of the chunk's first edge
    edges: Batch  # permuted
    ends: np.ndarray | None = None  # grouped layout: each batch's end offset in the chunk (None: every batch_size)
    groups: np.ndarray | None = None  # grouped layout: each batch's group

    def __len__(self) -> int:
        return len(self.edges)


@dataclass
class _RawChunk:
    start: int
    lhs: np.ndarray
    rhs: np.ndarray
    rel: np.ndarray
    weight: np.ndarray | None
    ends: np.ndarray | None = None
    groups: np.ndarray | None = None


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


Ranges = list[tuple[int, int]]  # [start, stop) ranges of a bucket's edges (its segments concatenated)


class EdgeSource:
    """``edges``: ``all`` of a bucket's edges, or only the ``appended`` ones (its latest segment).
    ``rel_group``: each relation's (lhs type, rhs type) group where there are several (chunks then come
    laid out in one-group batches of ``batch_size``, :func:`group_layout`); None: one group."""

    def __init__(
        self,
        graph: Graph,
        split: str,
        chunk_edges: int,
        device: torch.device,
        seed: int,
        executor: Executor,
        edges: str = "all",
        rel_group: np.ndarray | None = None,
        batch_size: int = 0,
    ) -> None:
        self.graph = graph
        self.split = split
        self.chunk_edges = chunk_edges
        self.device = device
        self.seed = seed
        self.executor = executor
        self.edges = edges
        self.rel_group = rel_group
        self.batch_size = batch_size
        self._pending: dict[tuple[int, tuple[int, int], int], Future[_RawChunk]] = {}
        self._plans: dict[tuple[int, int], tuple[list[Ranges], np.ndarray]] = {}

    def count(self, bucket: tuple[int, int]) -> int:
        return int(self._plan(bucket)[1][-1])

    def _plan(self, bucket: tuple[int, int]) -> tuple[list[Ranges], np.ndarray]:
        """The bucket's chunks (each a list of ranges) and their start positions (last: the edge count)."""
        if bucket not in self._plans:
            sizes = self.graph.segments(self.split, *bucket)
            starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            ranges = [(int(starts[k]), int(starts[k + 1])) for k in range(len(sizes)) if sizes[k]]
            if self.edges == "appended":
                ranges = [(int(starts[-2]), int(starts[-1]))] if len(sizes) > 1 and sizes[-1] else []
            self._plans[bucket] = _chunk_plan(ranges, self.chunk_edges)
        return self._plans[bucket]

    def _index(self, bucket: tuple[int, int], position: int) -> int:
        return int(np.searchsorted(self._plan(bucket)[1], position, side="right")) - 1

    def _load(self, epoch: int, bucket: tuple[int, int], index: int, shuffle: bool) -> _RawChunk:
        """Read and permute one chunk with numpy only: this runs on the prefetch thread, and a torch op there
        gives that thread its own OpenMP team, which slows every later training step (docs/benchmarks.md).
        The main thread turns the arrays into tensors (:meth:`_tensors`)."""
        chunks, starts = self._plan(bucket)
        start = int(starts[index])
        parts = [self.graph.read_bucket(self.split, bucket[0], bucket[1], lo, hi) for lo, hi in chunks[index]]
        arr = parts[0] if len(parts) == 1 else _concat(parts)
        n = len(arr)
        perm = np.random.default_rng(_seed(self.seed, epoch, bucket, index)).permutation(n) if shuffle else None
        ends = groups = None
        if self.rel_group is not None:
            rel = arr.rel if perm is None else arr.rel[perm]
            rng = np.random.default_rng(_seed(self.seed, epoch, bucket, index, "batches"))
            order, ends, groups = group_layout(self.rel_group[rel], len(self.rel_group), self.batch_size, rng)
            perm = order if perm is None else perm[order]

        def column(a: np.ndarray, dtype: type) -> np.ndarray:
            return np.ascontiguousarray(a if perm is None else a[perm], dtype=dtype)

        weight = column(arr.weight, np.float32) if arr.weight is not None else None
        cols = (column(arr.lhs, np.int64), column(arr.rhs, np.int64), column(arr.rel, np.int64))
        return _RawChunk(start, *cols, weight, ends, groups)

    def _tensors(self, raw: _RawChunk) -> EdgeChunk:
        def column(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            if self.device.type == "cuda":
                t = t.pin_memory().to(self.device, non_blocking=True)
            return t

        weight = column(raw.weight) if raw.weight is not None else None
        edges = Batch(column(raw.lhs), column(raw.rhs), column(raw.rel), weight)
        return EdgeChunk(raw.start, edges, raw.ends, raw.groups)

    def prefetch(self, epoch: int, bucket: tuple[int, int], index: int = 0) -> None:
        key = (epoch, bucket, index)
        if key not in self._pending and index < len(self._plan(bucket)[0]):
            self._pending[key] = self.executor.submit(self._load, epoch, bucket, index, True)

    def chunks(self, epoch: int, bucket: tuple[int, int], position: int = 0) -> Iterator[EdgeChunk]:
        """Shuffled chunks from ``position`` on; the next chunk is read while the current one trains."""
        total = len(self._plan(bucket)[0])
        index = self._index(bucket, position)
        while 0 <= index < total:
            key = (epoch, bucket, index)
            future = self._pending.pop(key, None)
            chunk = self._tensors(future.result() if future is not None else self._load(epoch, bucket, index, True))
            self.prefetch(epoch, bucket, index + 1)
            yield chunk
            index += 1


def _chunk_plan(ranges: Ranges, chunk_edges: int) -> tuple[list[Ranges], np.ndarray]:
    """Chunks of at most about ``chunk_edges`` edges over ``ranges``: one range is cut into consecutive pieces
    (the plain bucket's chunks); several are read K chunks deep, chunk c taking piece c of each range, pieces
    of ``ceil(len / K)`` edges, so every chunk holds the same share of each range."""
    total = sum(hi - lo for lo, hi in ranges)
    chunks: list[Ranges] = []
    if total:
        k = -(-total // chunk_edges)
        steps = [chunk_edges] if len(ranges) == 1 else [-(-(hi - lo) // k) for lo, hi in ranges]
        for c in range(k):
            pieces = [(lo + c * step, min(hi, lo + (c + 1) * step)) for (lo, hi), step in zip(ranges, steps)]
            pieces = [(a, b) for a, b in pieces if a < b]
            if pieces:
                chunks.append(pieces)
    sizes = [sum(b - a for a, b in pieces) for pieces in chunks]
    return chunks, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


def _concat(parts: list[EdgeArrays]) -> EdgeArrays:
    weight = np.concatenate([p.weight for p in parts]) if parts[0].weight is not None else None  # type: ignore[misc]
    return EdgeArrays(*(np.concatenate([getattr(p, key) for p in parts]) for key in ("lhs", "rhs", "rel")), weight)


def group_layout(
    group: np.ndarray, num_groups: int, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chunk's edges (``group``: each one's group, in permuted order) as one-group batches: ``(order, ends,
    groups)``, the chunk's new edge order, each batch's end offset in it and each batch's group.

    Each group's edges keep their (random) order and are cut into batches of ``batch_size``; a group's last
    batch of the chunk holds its remainder (fewer edges; one per group and chunk).  The batches are then
    shuffled with ``rng``, so groups interleave rather than follow one another.  Vectorised numpy, no per-edge
    Python: a stable counting sort by group and index arithmetic per batch."""
    order = np.argsort(group.astype(np.int16 if num_groups < 2**15 else np.int64), kind="stable")
    counts = np.bincount(group, minlength=num_groups)
    per_group = -(-counts // batch_size)  # batches per group
    groups = np.repeat(np.arange(num_groups), per_group)
    k = np.arange(len(groups)) - np.repeat(np.cumsum(per_group) - per_group, per_group)  # batch index in group
    starts = np.repeat(np.cumsum(counts) - counts, per_group) + k * batch_size  # in the group-sorted order
    lengths = np.minimum(batch_size, np.repeat(counts, per_group) - k * batch_size)
    shuffle = rng.permutation(len(groups))
    starts, lengths, groups = starts[shuffle], lengths[shuffle], groups[shuffle]
    ends = np.cumsum(lengths)
    index = np.repeat(starts - (ends - lengths), lengths) + np.arange(len(group))
    return order[index], ends, groups


def batches(chunk: EdgeChunk, batch_size: int, position: int) -> Iterator[tuple[int, Batch]]:
    """(position after the batch, batch) for the chunk's edges from bucket ``position`` on: batches of
    ``batch_size``, or the chunk's one-group batches (each with its ``group``) when it has a grouped layout."""
    e = chunk.edges
    n = len(chunk)
    offset = max(0, position - chunk.start)
    if chunk.ends is None:
        bounds = [(lo, min(n, lo + batch_size), None) for lo in range(offset, n, batch_size)]
    else:
        first = int(np.searchsorted(chunk.ends, offset, side="right"))
        ends, groups = chunk.ends.tolist(), chunk.groups.tolist()  # type: ignore[union-attr]
        bounds = [(ends[b - 1] if b else 0, ends[b], groups[b]) for b in range(first, len(ends))]
    for lo, hi, group in bounds:
        w = None if e.weight is None else e.weight[lo:hi]
        yield chunk.start + hi, Batch(e.lhs[lo:hi], e.rhs[lo:hi], e.rel[lo:hi], w, group)


def read_all(graph: Graph, split: str, bucket: tuple[int, int], device: torch.device) -> Batch:
    """A whole (small) bucket unshuffled, e.g. the validation edges of the current bucket."""
    arr = graph.read_bucket(split, *bucket)

    def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)

    weight = t(arr.weight, torch.float32) if arr.weight is not None else None
    return Batch(t(arr.lhs, torch.long), t(arr.rhs, torch.long), t(arr.rel, torch.long), weight)

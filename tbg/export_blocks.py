"""One entity type's trained vectors in dense-id order, as blocks of rows that fit a memory budget (export).

Checkpoint shards hold rows in partition order (a shuffled permutation of the dense ids), so dense order is a
scatter.  When the whole ``[count, D]`` table fits (no ``runtime.memory_budget``, or one that holds a quarter
of it) every shard is scattered into one array, one block.  Otherwise each shard is read in row slices, each
slice's rows are sorted by the dense-id block they belong to and appended to a spill file in the output's temp
dir, and the blocks are read back one at a time: the table's bytes cross the disk twice, and memory holds one
slice and one block (each at most a quarter of the budget), with the block's names
(:meth:`tbg.graph.Graph.name_blocks`) and one partition's ids.  numpy/h5py only: export does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import h5py
import numpy as np

from tbg.checkpoint import Checkpoint, require_finite
from tbg.errors import CheckpointError
from tbg.graph import Graph

SHARE = 4  # a slice of a shard, and a block, each take at most 1/SHARE of the budget
NAME_BYTES = 96  # what a block's entity name takes while it is written (str object, its Arrow copy, escaping)


def block_rows(count: int, dim: int, budget: int | None) -> int:
    """Rows per block: all of them without a budget, else what 1/SHARE of the budget holds (at least 1): each
    row's vector, its dense id and its name."""
    if budget is None:
        return max(1, count)
    return max(1, min(count, budget // SHARE // (4 * dim + 8 + NAME_BYTES)))


def _shard(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable embedding shard: {exc}") from None


def _slices(graph: Graph, ckpt: Checkpoint, etype: str, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(dense ids, float32 rows) of every shard of ``etype``, in slices of at most ``rows`` rows."""
    for p in range(graph.entity_types[etype].num_partitions):
        path = ckpt.embedding_path(etype, p)
        ids = graph.read_partition_ids(etype, p)
        with _shard(path) as f:
            try:
                ds = f["embeddings"]
            except KeyError:
                raise CheckpointError(f"{path}: unreadable embedding shard: no 'embeddings' dataset") from None
            for lo in range(0, ds.shape[0], rows):
                hi = min(ds.shape[0], lo + rows)
                vec = np.empty((hi - lo, ds.shape[1]), dtype=np.float32)
                try:
                    ds.read_direct(vec, np.s_[lo:hi])  # converts fp16 shards on read
                except OSError as exc:
                    raise CheckpointError(f"{path}: unreadable embedding shard: {exc}") from None
                require_finite(vec, path)
                yield ids[lo:hi], vec


def dense_blocks(
    graph: Graph, ckpt: Checkpoint, etype: str, dim: int, rows: int, spill_dir: str
) -> Iterator[tuple[int, np.ndarray]]:
    """(first dense id, float32 block [rows, dim]) for consecutive blocks of ``rows`` (:func:`block_rows`)
    covering every entity of ``etype``."""
    count = graph.entity_types[etype].count
    if rows >= count:
        out = np.empty((count, dim), dtype=np.float32)
        for ids, vec in _slices(graph, ckpt, etype, max(1, count)):
            out[ids] = vec
        yield 0, out
        return
    nblocks = -(-count // rows)
    pieces: list[list[tuple[int, int]]] = [[] for _ in range(nblocks)]  # (byte offset, rows) per block
    path = os.path.join(spill_dir, f".{etype}.spill")
    try:
        with open(path, "wb") as fh:
            for ids, vec in _slices(graph, ckpt, etype, rows):
                block = ids // rows
                order = np.argsort(block, kind="stable")
                ids, vec, block = ids[order], vec[order], block[order]
                bounds = np.searchsorted(block, np.arange(nblocks + 1))
                for b in np.nonzero(bounds[1:] > bounds[:-1])[0].tolist():
                    lo, hi = int(bounds[b]), int(bounds[b + 1])
                    pieces[b].append((fh.tell(), hi - lo))
                    fh.write(ids[lo:hi].astype(np.int64).tobytes())
                    fh.write(vec[lo:hi].tobytes())
        with open(path, "rb") as fh:
            for b in range(nblocks):
                start = b * rows
                out = np.empty((min(rows, count - start), dim), dtype=np.float32)
                filled = 0
                for offset, n in pieces[b]:
                    fh.seek(offset)
                    ids = np.fromfile(fh, dtype=np.int64, count=n)
                    out[ids - start] = np.fromfile(fh, dtype=np.float32, count=n * dim).reshape(n, dim)
                    filled += n
                if filled != len(out):  # the shards' row counts are checked before; this is a bug guard
                    raise CheckpointError(f"{ckpt.path}: {etype} rows {start}..: {filled} of {len(out)} found")
                yield start, out
    finally:
        if os.path.exists(path):
            os.remove(path)

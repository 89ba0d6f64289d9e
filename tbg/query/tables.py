"""Candidate tables of a checkpoint: per (type, partition) the shard rows and the faiss index over them.

Indexes come from the :class:`~tbg.query.index_cache.IndexCache` (built on first use) and stay in memory in
an LRU bounded by ``max_index_bytes``, so a batch searched partition by partition holds about one
partition's index at a time while repeated single queries reuse what is loaded.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from tbg.checkpoint import Checkpoint
from tbg.errors import CheckpointError
from tbg.query.calibration import CALIBRATION_QUERIES, calibrate_nprobe
from tbg.query.index import METRICS, IndexSpec, QueryIndex, build_index, choose_spec
from tbg.query.index_cache import IndexCache
from tbg.query.shard_rows import ShardRows

DEFAULT_INDEX_BYTES = 4 << 30


class CandidateTables:
    """Shards and indexes of the entity types of one checkpoint, in index space ``comparator.prepare``."""

    def __init__(
        self,
        ckpt: Checkpoint,
        bounds: dict[str, np.ndarray],
        comparator: Any,
        comparator_name: str,
        cache: IndexCache,
        index_kind: str = "auto",
        nlist: int | None = None,
        seed: int = 0,
        max_index_bytes: int = DEFAULT_INDEX_BYTES,
    ) -> None:
        self.ckpt = ckpt
        self.bounds = bounds
        self.comparator = comparator
        self.metric = METRICS.get(comparator_name, (None, False))[0]
        self.cache = cache
        self.index_kind = index_kind
        self.nlist = nlist
        self.seed = seed
        self.max_index_bytes = max_index_bytes
        self._shards: dict[tuple[str, int], ShardRows] = {}
        self._indexes: OrderedDict[tuple[str, int], QueryIndex] = OrderedDict()

    @property
    def has_index_space(self) -> bool:
        """False for a comparator with no faiss metric: every query is then scanned through the model."""
        return self.metric is not None

    def num_partitions(self, etype: str) -> int:
        return len(self.bounds[etype]) - 1

    def base(self, etype: str, part: int) -> int:
        return int(self.bounds[etype][part])

    def shard(self, etype: str, part: int) -> ShardRows:
        key = (etype, part)
        if key not in self._shards:
            shard = ShardRows(self.ckpt.embedding_path(etype, part))
            want = int(self.bounds[etype][part + 1] - self.bounds[etype][part])
            if shard.rows != want:
                raise CheckpointError(f"{shard.path}: {shard.rows} rows, the graph has {want} in this partition")
            self._shards[key] = shard
        return self._shards[key]

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        """Raw rows -> index space (the comparator's prepare), float32, refusing NaN/inf."""
        if not np.isfinite(raw).all():
            raise CheckpointError(f"{self.ckpt.path}: embeddings contain NaN or inf")
        with torch.inference_mode():
            return self.comparator.prepare(torch.from_numpy(raw)).numpy()

    def spec(self, etype: str, part: int) -> IndexSpec:
        assert self.metric is not None
        return choose_spec(self.index_kind, self.metric, self.shard(etype, part).rows, self.nlist)

    def index(self, etype: str, part: int) -> QueryIndex:
        key = (etype, part)
        if key in self._indexes:
            self._indexes.move_to_end(key)
            return self._indexes[key]
        shard = self.shard(etype, part)
        spec = self.spec(etype, part)

        def block(a: int, b: int) -> np.ndarray:
            return self.prepare(shard.block(a, b))

        def sample_rows(n: int, stream: int) -> np.ndarray:
            rng = np.random.default_rng([self.seed, part, shard.rows, stream])
            return np.sort(rng.choice(shard.rows, size=min(n, shard.rows), replace=False))

        def build() -> QueryIndex:
            index = build_index(
                spec, shard.rows, shard.dim, block, lambda n: self.prepare(shard.take(sample_rows(n, 0)))
            )
            if spec.kind == "ivf":
                rows = sample_rows(CALIBRATION_QUERIES, 1)
                queries = self.prepare(shard.take(rows))
                index.nprobe, index.recall = calibrate_nprobe(index, spec.metric, shard.rows, block, rows, queries)
            return index

        # a flat index is the prepared shard itself: rebuilding it costs one read, like loading a cached copy would
        index = build() if spec.kind == "flat" else self.cache.get(etype, part, spec, shard.rows, shard.dim, build)
        self._indexes[key] = index
        while len(self._indexes) > 1 and sum(i.nbytes for i in self._indexes.values()) > self.max_index_bytes:
            self._indexes.popitem(last=False)
        return index

    def release(self, etype: str, part: int) -> None:
        """Drop a loaded index when it exceeds the budget alone (large tables searched once per batch)."""
        index = self._indexes.get((etype, part))
        if index is not None and index.nbytes > self.max_index_bytes:
            del self._indexes[(etype, part)]

"""The filtered-protocol index: known true candidates of each evaluation query (numpy only).

A query is (relation, known entity) for one target side.  Only known edges whose query occurs in the
evaluation split are kept, so the index is O(known edges that touch an evaluated query) — at most O(known
edges), usually far less — and it is built by streaming the known splits in bounded chunks.  Storage is one
sorted, unique int64 array ``qidx * n + candidate`` where ``qidx`` is the query's rank among the unique eval
queries and ``n`` bounds every candidate position: a query's known candidates are one contiguous
``searchsorted`` range, and membership of (query, candidate) pairs is one vectorised ``searchsorted``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tbg.evaluation.eval_edges import EvalEdges, TypeLayout, iter_split
from tbg.graph import Graph

_INT64_MAX = np.iinfo(np.int64).max


def _other(target: str) -> str:
    return "lhs" if target == "rhs" else "rhs"


class FilterIndex:
    """Known true candidates for the queries of one target side."""

    def __init__(self, query_keys: np.ndarray, keys: np.ndarray, n: int) -> None:
        self.query_keys = query_keys  # sorted unique rel * n + known
        self.keys = keys  # sorted unique qidx * n + candidate
        self.n = n

    @staticmethod
    def query_key(rel: np.ndarray, known: np.ndarray, n: int) -> np.ndarray:
        return rel.astype(np.int64) * n + known

    def query_index(self, rel: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Index of each (rel, known) among the eval queries, -1 when absent."""
        qk = self.query_key(rel, known, self.n)
        idx = np.searchsorted(self.query_keys, qk)
        idx_c = np.minimum(idx, max(len(self.query_keys) - 1, 0))
        found = (idx < len(self.query_keys)) & (self.query_keys[idx_c] == qk) if len(self.query_keys) else idx < 0
        return np.where(found, idx, -1)

    def lookup(self, qidx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, candidate) of every known candidate of each query row (rows with qidx -1 have none)."""
        lo = np.searchsorted(self.keys, qidx * self.n)
        hi = np.searchsorted(self.keys, (qidx + 1) * self.n)
        lengths = np.where(qidx >= 0, hi - lo, 0)
        rows = np.repeat(np.arange(len(qidx), dtype=np.int64), lengths)
        starts = np.cumsum(lengths) - lengths
        idx = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts - lo, lengths)
        return rows, self.keys[idx] - qidx[rows] * self.n

    def contains(self, qidx: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Whether (qidx[i], cand[i]) is a known edge (broadcasting like numpy)."""
        key = np.asarray(qidx, dtype=np.int64) * self.n + cand
        pos = np.searchsorted(self.keys, key)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        hit = (self.keys[pos_c] == key) if len(self.keys) else np.zeros(key.shape, dtype=bool)
        return hit & (np.asarray(qidx) >= 0) & (pos < len(self.keys))

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.query_keys.nbytes)


def build_filters(
    graph: Graph, edges: EvalEdges, splits: Sequence[str], chunk_edges: int = 1 << 20
) -> dict[str, FilterIndex]:
    """One index per target side, from the known edges of ``splits`` (read once, chunk by chunk)."""
    layout = TypeLayout(graph)
    n = layout.max_count + 1
    num_rel = max(len(graph.relations), 1)
    query_keys = {}
    for target in ("lhs", "rhs"):
        qk = np.unique(FilterIndex.query_key(edges.rel, edges.side(_other(target)), n))
        if len(qk) and (num_rel * n > _INT64_MAX // 2 or (len(qk) + 1) * n > _INT64_MAX // 2):
            raise OverflowError("too many entities or queries for int64 filter keys")
        query_keys[target] = qk
    parts: dict[str, list[np.ndarray]] = {"lhs": [], "rhs": []}
    probe = {t: FilterIndex(query_keys[t], np.zeros(0, np.int64), n) for t in ("lhs", "rhs")}
    for split in splits:
        for block in iter_split(graph, layout, split, chunk_edges):
            for target in ("lhs", "rhs"):
                qidx = probe[target].query_index(block.rel, block.side(_other(target)))
                keep = qidx >= 0
                if keep.any():
                    parts[target].append(np.unique(qidx[keep] * n + block.side(target)[keep]))
    return {
        t: FilterIndex(query_keys[t], np.unique(np.concatenate(parts[t])) if parts[t] else np.zeros(0, np.int64), n)
        for t in ("lhs", "rhs")
    }

"""Choosing an IVF index's ``nprobe`` by measurement: the fewest lists that reach a recall target.

After a partition's IVF index is built, :data:`CALIBRATION_QUERIES` of its own vectors (seeded) are searched for
their ``K`` nearest others, exactly (block by block over the partition) and through the index at nprobe = 1, 2, 3,
4, 6, 8, 11, 16, ... lists (steps of √2); the first nprobe whose mean recall@K reaches :data:`RECALL_TARGET` is
stored with the index (and in its cache entry) and used whenever a query gives no ``nprobe`` of its own.  How
data clusters varies too much between tables for one fixed fraction of lists to be right for all.  A partition's
own top-K is harder to find than its share of a top-K merged over partitions, so the target errs on the safe side.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tbg.query.index import ADD_BLOCK_ROWS, QueryIndex, search

RECALL_TARGET = 0.95
CALIBRATION_QUERIES = 256
K = 10


def exact_top(
    queries: np.ndarray, self_rows: np.ndarray, metric: str, rows: int, block: Callable[[int, int], np.ndarray], k: int
) -> np.ndarray:
    """Offsets [n, k] of each query's k best rows by ``metric`` (``ip`` or ``l2``), its own row excluded."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for a in range(0, rows, ADD_BLOCK_ROWS):
        x = block(a, min(rows, a + ADD_BLOCK_ROWS))
        s = queries @ x.T
        if metric == "l2":
            s = 2 * s - np.einsum("ij,ij->i", x, x)[None, :]
        own = (self_rows >= a) & (self_rows < a + len(x))
        s[np.flatnonzero(own), self_rows[own] - a] = -np.inf
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(np.arange(a, a + len(x)), s.shape)], axis=1)
        top = np.argpartition(-all_s, min(k, all_s.shape[1]) - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


def calibrate_nprobe(
    index: QueryIndex,
    metric: str,
    rows: int,
    block: Callable[[int, int], np.ndarray],
    query_rows: np.ndarray,
    queries: np.ndarray,
    target: float = RECALL_TARGET,
) -> tuple[int, float]:
    """(nprobe, recall@K at it): the fewest lists reaching ``target`` (all lists if none does)."""
    nlist = int(index.index.nlist)
    k = min(K, rows - 1)
    if k < 1 or not len(queries):
        return nlist, 1.0
    truth = exact_top(queries, query_rows, metric, rows, block, k)
    ladder = sorted({*(round(2 ** (i / 2)) for i in range(2 * nlist.bit_length()) if 2 ** (i / 2) < nlist), nlist})
    recall = 0.0
    for nprobe in ladder:
        _, labels = search(index, queries, k + 1, nprobe)
        labels = np.where(labels == query_rows[:, None], -1, labels)
        hits = [len(set(got[got >= 0][:k].tolist()) & set(want.tolist())) for got, want in zip(labels, truth)]
        recall = float(np.mean(hits)) / k
        if recall >= target:
            return nprobe, recall
    return nlist, recall

"""Top-k over all partitions of a candidate type: retrieve per partition, merge, rescore through the model.

For each candidate type the partitions are visited once; every group of that type is searched against the
partition's faiss index (or scanned through the model, see :mod:`tbg.query.plan`) in query batches, and
each query keeps its best ``k_fetch`` (partition, offset) pairs so far.  Memory is one partition's index (or
prepared table) plus ``[queries, k_fetch]`` candidates.  The survivors are then scored by the model's own
function (``comparator.matrix(query, candidates(θ_y))``), excluded entries dropped, and the best ``k`` kept,
so a returned score is always the model's score and never the index's approximation of it.

``k_fetch`` = k + :data:`RESCORE_EXTRA` + the query's exclusions (rounded up to a power of two so queries
with similar counts share a search call): excluded candidates can never push a wanted one out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tbg.query.index import search as index_search
from tbg.query.plan import QueryGroup
from tbg.query.tables import CandidateTables

RESCORE_EXTRA = 16
QUERY_BATCH = 4096
SCAN_BLOCK_COLS = 1 << 16
RESCORE_FLOATS = 1 << 24


@dataclass
class TopK:
    """Best ``k`` candidates of each query, best first; position -1 / score -inf pad short rows."""

    positions: np.ndarray  # [n, k] int64 positions in the candidate type
    scores: np.ndarray  # [n, k] float32 model scores


class _Running:
    """Best ``kf`` (key, position) pairs of a set of queries across partitions."""

    def __init__(self, rows: np.ndarray, kf: int) -> None:
        self.rows = rows
        self.kf = kf
        self.keys = np.full((len(rows), kf), -np.inf, dtype=np.float32)
        self.pos = np.full((len(rows), kf), -1, dtype=np.int64)

    def merge(self, sl: slice, keys: np.ndarray, pos: np.ndarray) -> None:
        k_all = np.concatenate([self.keys[sl], keys], axis=1)
        p_all = np.concatenate([self.pos[sl], pos], axis=1)
        if k_all.shape[1] > self.kf:
            top = np.argpartition(-k_all, self.kf - 1, axis=1)[:, : self.kf]
            k_all = np.take_along_axis(k_all, top, 1)
            p_all = np.take_along_axis(p_all, top, 1)
        self.keys[sl], self.pos[sl] = k_all, p_all


def _subsets(group: QueryGroup, k: int) -> list[_Running]:
    """Rows of a group split by exclusion count (power-of-two buckets), each with its k_fetch."""
    n = len(group)
    counts = np.bincount(group.exclude_rows, minlength=n) if len(group.exclude_rows) else np.zeros(n, np.int64)
    bucket = np.where(counts > 0, np.ceil(np.log2(counts + 1)).astype(np.int64), 0)
    out = []
    for b in np.unique(bucket):
        rows = np.flatnonzero(bucket == b)
        out.append(_Running(rows, k + RESCORE_EXTRA + (int(2**b) - 1 if b else 0)))
    return out


def _scan(
    tables: CandidateTables, group: QueryGroup, prepared: torch.Tensor, queries: torch.Tensor, kf: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-kf model scores of ``queries`` against one prepared partition, block by block."""
    best_s = torch.full((len(queries), 0), float("-inf"))
    best_i = torch.zeros((len(queries), 0), dtype=torch.int64)
    for c0 in range(0, prepared.shape[0], SCAN_BLOCK_COLS):
        block = prepared[c0 : c0 + SCAN_BLOCK_COLS]
        scores = tables.comparator.matrix(queries, block)
        s, i = torch.topk(scores, min(kf, block.shape[0]), dim=1)
        best_s, order = torch.topk(torch.cat([best_s, s], 1), min(kf, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.gather(torch.cat([best_i, i + c0], 1), 1, order)
    keys, off = best_s.numpy(), best_i.numpy()
    if keys.shape[1] < kf:
        pad = kf - keys.shape[1]
        keys = np.pad(keys, ((0, 0), (0, pad)), constant_values=-np.inf)
        off = np.pad(off, ((0, 0), (0, pad)), constant_values=-1)
    return keys.astype(np.float32), off


def _retrieve(tables: CandidateTables, ctype: str, groups: list[QueryGroup], k: int, nprobe: int | None):
    running = [_subsets(g, k) for g in groups]
    for p in range(tables.num_partitions(ctype)):
        base = tables.base(ctype, p)
        for group, subsets in zip(groups, running):
            if group.index_queries is not None:
                index = tables.index(ctype, p)
            else:
                raw = torch.from_numpy(tables.shard(ctype, p).block(0, tables.shard(ctype, p).rows))
                prepared = group.candidates(raw)
            for sub in subsets:
                for a in range(0, len(sub.rows), QUERY_BATCH):
                    rows = sub.rows[a : a + QUERY_BATCH]
                    if group.index_queries is not None:
                        keys, off = index_search(index, group.index_queries[rows], sub.kf, nprobe)
                    else:
                        keys, off = _scan(tables, group, prepared, group.queries[rows], sub.kf)
                    sub.merge(slice(a, a + len(rows)), keys, np.where(off >= 0, off + base, -1))
        tables.release(ctype, p)
    return running


def _excluded(group: QueryGroup, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Mask of (rows[i], pos[i, j]) pairs listed in the group's exclusions."""
    if not len(group.exclude_rows):
        return np.zeros(pos.shape, dtype=bool)
    span = int(max(pos.max(initial=0), group.exclude_positions.max(initial=0))) + 2
    keys = np.unique(group.exclude_rows.astype(np.int64) * span + group.exclude_positions)
    probe = rows[:, None].astype(np.int64) * span + pos
    at = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    return keys[at] == probe


def _rescore(tables: CandidateTables, group: QueryGroup, sub: _Running, k: int, out: TopK) -> None:
    ctype = group.ctype
    bounds = tables.bounds[ctype]
    dim = int(group.queries.shape[1])
    step = max(1, RESCORE_FLOATS // max(1, sub.kf * dim))
    for a in range(0, len(sub.rows), step):
        rows = sub.rows[a : a + step]
        pos = sub.pos[a : a + step]
        raw = np.zeros((*pos.shape, dim), dtype=np.float32)
        valid = pos >= 0
        part = np.searchsorted(bounds, np.where(valid, pos, 0), side="right") - 1
        for p in np.unique(part[valid]):
            m = valid & (part == p)
            raw[m] = tables.shard(ctype, int(p)).take(pos[m] - bounds[p])
        cand = group.candidates(torch.from_numpy(raw.reshape(-1, dim))).reshape(*pos.shape, dim)
        scores = tables.comparator.matrix(group.queries[rows].unsqueeze(1), cand).squeeze(1).numpy()
        drop = ~valid | _excluded(group, rows, pos)
        scores = np.where(drop, -np.inf, scores).astype(np.float32)
        order = np.lexsort((np.where(drop, np.iinfo(np.int64).max, pos), -scores), axis=1)[:, :k]
        best_s = np.take_along_axis(scores, order, 1)
        best_p = np.where(np.isfinite(best_s), np.take_along_axis(pos, order, 1), -1)
        width = best_s.shape[1]
        out.scores[rows, :width], out.positions[rows, :width] = best_s, best_p


def top_k(tables: CandidateTables, groups: list[QueryGroup], k: int, nprobe: int | None = None) -> list[TopK]:
    """The model's best ``k`` candidates for every query of every group (one pass over each type)."""
    results = [
        TopK(np.full((len(g), k), -1, dtype=np.int64), np.full((len(g), k), -np.inf, dtype=np.float32)) for g in groups
    ]
    with torch.inference_mode():
        for ctype in dict.fromkeys(g.ctype for g in groups):
            members = [i for i, g in enumerate(groups) if g.ctype == ctype]
            running = _retrieve(tables, ctype, [groups[i] for i in members], k, nprobe)
            for i, subsets in zip(members, running):
                for sub in subsets:
                    _rescore(tables, groups[i], sub, k, results[i])
    return results

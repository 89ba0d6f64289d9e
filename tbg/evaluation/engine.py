"""The ranking engine (torch): scores eval queries against candidates and counts, never sorts.

For a chunk of queries the truth's score ``s`` is computed first; then candidate blocks are scored with one
matrix product each and reduced immediately to per-query counts ``#(score > s)`` and ``#(score >= s)``, so
memory is one ``[batch, block]`` score buffer however many candidates there are.  The true candidate and
(filtered protocol) every other known true candidate are set to -inf before counting.

Candidate tables are streamed partition by partition through :class:`TableCache` (an LRU with a byte budget),
which also keeps the *prepared* candidates (operator applied in relation_sides=rhs mode, comparator
``prepare``), so each partition is loaded and prepared once per (target, relation) instead of once per chunk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tbg.errors import CheckpointError
from tbg.evaluation.eval_edges import CandidateSet, EvalEdges, TypeLayout
from tbg.evaluation.filter import FilterIndex
from tbg.evaluation.ranking import SideCounts
from tbg.model.scoring import RelationModel

# (entity type, partition) -> [rows, dim] embeddings (numpy or torch, any float dtype)
EmbeddingSource = Callable[[str, int], "np.ndarray | torch.Tensor"]


def _other(target: str) -> str:
    return "lhs" if target == "rhs" else "rhs"


class TableCache:
    """LRU of device tensors keyed by (kind, type, partition, ...), bounded by ``max_bytes``."""

    def __init__(self, source: EmbeddingSource, model: RelationModel, device: torch.device, max_bytes: int) -> None:
        self.source = source
        self.model = model
        self.device = device
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()  # chunks may run in worker threads

    def _put(self, key: tuple, value: torch.Tensor) -> torch.Tensor:
        self._items[key] = value
        self._bytes += value.numel() * value.element_size()
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        return value

    def raw(self, etype: str, part: int) -> torch.Tensor:
        with self._lock:
            return self._raw(etype, part)

    def prepared(self, target: str, etype: str, part: int, rel: int | None) -> torch.Tensor:
        with self._lock:
            return self._prepared(target, etype, part, rel)

    def _raw(self, etype: str, part: int) -> torch.Tensor:
        key = ("raw", etype, part)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        data = self.source(etype, part)
        table = torch.as_tensor(data).to(self.device, torch.float32)
        if not bool(torch.isfinite(table).all()):
            raise CheckpointError(f"embeddings of {etype!r} partition {part} contain NaN or inf")
        return self._put(key, table)

    def _prepared(self, target: str, etype: str, part: int, rel: int | None) -> torch.Tensor:
        key = ("prep", target, etype, part, rel)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        raw = self._raw(etype, part)
        prep = self.model.candidates(target, raw, rel)
        if prep.data_ptr() == raw.data_ptr():
            return prep  # identity preparation: the raw entry already holds it
        return self._put(key, prep.contiguous())


@dataclass
class Plan:
    """Edges of one target side sorted into groups that share a candidate table."""

    order: np.ndarray  # permutation of the eval edges
    starts: np.ndarray  # chunk boundaries into ``order`` (len = chunks + 1)


def _plan(
    edges: EvalEdges, target: str, layout: TypeLayout, model: RelationModel, chunk: int
) -> tuple[Plan, np.ndarray, np.ndarray, np.ndarray]:
    """Sort by (candidate type, truth partition, relation when candidates depend on it, known side) and chunk."""
    ctype = layout.type_of[target][edges.rel]
    tpart = np.zeros(len(edges), dtype=np.int64)
    toff = np.zeros(len(edges), dtype=np.int64)
    for t, name in enumerate(layout.type_names):
        m = ctype == t
        if m.any():
            tpart[m], toff[m] = layout.locate(name, edges.side(target)[m])
    relkey = edges.rel if model.candidates_need_relation(target) else np.zeros(len(edges), dtype=np.int64)
    order = np.lexsort((edges.side(_other(target)), relkey, tpart, ctype))
    group = np.stack([ctype[order], tpart[order], relkey[order]])
    change = np.flatnonzero((np.diff(group, axis=1) != 0).any(0)) + 1
    bounds = np.concatenate([[0], change, [len(edges)]])
    starts = [np.arange(a, b, chunk) for a, b in zip(bounds[:-1], bounds[1:])]
    starts_arr = np.concatenate([*starts, [len(edges)]]).astype(np.int64)
    return Plan(order, starts_arr), ctype, tpart, toff


def _known_embeddings(
    cache: TableCache, layout: TypeLayout, edges: EvalEdges, idx: np.ndarray, side: str, dim: int
) -> torch.Tensor:
    """Embeddings of the ``side`` entities of edges ``idx``, gathered partition by partition."""
    out = torch.empty((len(idx), dim), dtype=torch.float32, device=cache.device)
    ktype = layout.type_of[side][edges.rel[idx]]
    pos = edges.side(side)[idx]
    for t in np.unique(ktype):
        name = layout.type_names[t]
        m = ktype == t
        part, off = layout.locate(name, pos[m])
        rows_t = np.flatnonzero(m)
        for p in np.unique(part):
            sel = part == p
            table = cache.raw(name, int(p))
            rows = torch.from_numpy(rows_t[sel]).to(cache.device)
            out[rows] = table.index_select(0, torch.from_numpy(off[sel]).to(cache.device))
    return out


def _rank_chunk(
    model: RelationModel,
    edges: EvalEdges,
    target: str,
    layout: TypeLayout,
    cache: TableCache,
    filt: FilterIndex | None,
    idx: np.ndarray,
    ctype: int,
    tp: int,
    toff: np.ndarray,
    block_cols: int,
    excluded: list[tuple[np.ndarray, torch.Tensor]],
    num_candidates: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(#greater, #equal, #negatives) of one chunk of queries sharing candidate type and truth partition.

    ``excluded[p]`` = (sorted offsets, the same on the device) of partition ``p``'s non-candidates, and
    ``num_candidates`` how many entities of the type are candidates (see :class:`CandidateSet`)."""
    known_side = _other(target)
    dev = cache.device
    ct_name = layout.type_names[ctype]
    rel_key = int(edges.rel[idx[0]]) if model.candidates_need_relation(target) else None
    first = cache.prepared(target, ct_name, tp, rel_key)
    known = _known_embeddings(cache, layout, edges, idx, known_side, first.shape[1])
    query = model.query(target, known, torch.from_numpy(edges.rel[idx]).to(dev))
    truth = first.index_select(0, torch.from_numpy(toff).to(dev))
    # same GEMM kernel as the candidate blocks, so a candidate identical to the truth ties exactly
    pos = torch.diagonal(model.comparator.matrix(query, truth)).contiguous()

    # entries to mask: the truth itself plus known true candidates (filtered), sorted by (partition, offset)
    rows = np.arange(len(idx), dtype=np.int64)
    cand_pos = edges.side(target)[idx]
    removed = np.zeros(len(idx), dtype=np.int64)
    if filt is not None:
        qidx = filt.query_index(edges.rel[idx], edges.side(known_side)[idx])
        frows, fcand = filt.lookup(qidx)
        not_truth = fcand != cand_pos[frows]
        frows, fcand = frows[not_truth], fcand[not_truth]
        removed = np.bincount(frows, minlength=len(idx))
        rows = np.concatenate([rows, frows])
        cand_pos = np.concatenate([cand_pos, fcand])
    mpart, moff = layout.locate(ct_name, cand_pos)
    mord = np.lexsort((moff, mpart))
    mrows, mpart, moff = rows[mord], mpart[mord], moff[mord]

    gt = torch.zeros(len(idx), dtype=torch.int64, device=dev)
    ge = torch.zeros(len(idx), dtype=torch.int64, device=dev)
    for p in range(len(layout.bounds[ct_name]) - 1):
        cands = first if p == tp else cache.prepared(target, ct_name, p, rel_key)
        lo_p, hi_p = np.searchsorted(mpart, [p, p + 1])
        part_off = moff[lo_p:hi_p]
        ex_np, ex_dev = excluded[p]
        for j0 in range(0, cands.shape[0], block_cols):
            j1 = min(cands.shape[0], j0 + block_cols)
            lo, hi = lo_p + np.searchsorted(part_off, [j0, j1])
            scores = model.comparator.matrix(query, cands[j0:j1])
            if len(ex_np):  # non-candidate columns (one fill per block, no per-row work)
                x0, x1 = np.searchsorted(ex_np, [j0, j1])
                if x1 > x0:
                    scores.index_fill_(1, ex_dev[x0:x1] - j0, float("-inf"))
            if hi > lo:
                r = torch.from_numpy(mrows[lo:hi]).to(dev)
                scores[r, torch.from_numpy(moff[lo:hi] - j0).to(dev)] = float("-inf")
            g, e = _count(scores, pos)
            gt += g
            ge += e
    gt_np = gt.cpu().numpy()
    return gt_np, ge.cpu().numpy() - gt_np, num_candidates - 1 - removed


def _count(scores: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(#greater, #greater-or-equal) per row, destroying ``scores`` (a scratch block).

    sign(score - pos) is exact for finite floats (x - y == 0 iff x == y under gradual underflow), and its
    row sums S1 = #gt - #lt and S2 = #gt + #lt are exact in fp32 for blocks < 2**24 columns: #gt = (S1+S2)/2,
    #eq = cols - S2.  Four in-place float passes are much cheaper than two bool-producing comparisons.
    Masked (-inf) entries count as lower.
    """
    signs = scores.sub_(pos.unsqueeze(1)).sign_()
    s1 = signs.sum(1)
    s2 = signs.abs_().sum(1)
    gt = ((s1 + s2) * 0.5).round_().to(torch.int64)
    eq = (scores.shape[1] - s2).round_().to(torch.int64)
    return gt, gt + eq


def rank_all_sides(
    model: RelationModel,
    edges: EvalEdges,
    targets: tuple[str, ...],
    layout: TypeLayout,
    cache: TableCache,
    filters: dict[str, FilterIndex | None],
    batch_size: int = 1000,
    block_cols: int = 512,
    workers: int = 1,
    candidate_set: CandidateSet | None = None,
) -> dict[str, SideCounts]:
    """All-candidate ranking of several target sides, their chunks sharing one pool of workers.

    ``candidate_set`` says which entities are candidates (default :meth:`CandidateSet.all`: every declared
    one).  ``workers`` > 1 (CPU) runs chunks in that many threads with one intra-op thread each:
    coarse-grained parallelism has no per-operation barrier, which matters on a busy or small machine.
    """
    cset = candidate_set or CandidateSet.all(layout)
    excluded = {
        name: [(ex, torch.from_numpy(ex).to(cache.device)) for ex in parts] for name, parts in cset.excluded.items()
    }
    n = len(edges)
    if workers > 1:  # at least ~4 chunks per worker so that threads finish together
        batch_size = min(batch_size, max(64, -(-n * len(targets) // (4 * workers))))
    out: dict[str, SideCounts] = {}
    tasks: list[Callable[[], None]] = []
    for target in targets:
        counts = SideCounts(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))
        out[target] = counts
        plan, ctype, tpart, toff = _plan(edges, target, layout, model, batch_size)
        for a, b in zip(plan.starts[:-1], plan.starts[1:]):
            idx = plan.order[a:b]

            def task(idx=idx, target=target, counts=counts, ctype=ctype, tpart=tpart, toff=toff) -> None:
                with torch.inference_mode():
                    g, e, c = _rank_chunk(
                        model,
                        edges,
                        target,
                        layout,
                        cache,
                        filters[target],
                        idx,
                        int(ctype[idx[0]]),
                        int(tpart[idx[0]]),
                        toff[idx],
                        block_cols,
                        excluded[layout.type_names[int(ctype[idx[0]])]],
                        cset.counts[layout.type_names[int(ctype[idx[0]])]],
                    )
                counts.greater[idx], counts.equal[idx], counts.num_candidates[idx] = g, e, c

            tasks.append(task)
    run_tasks(tasks, workers if cache.device.type == "cpu" else 1)
    return out


def run_tasks(tasks: list[Callable[[], None]], workers: int) -> None:
    """Run tasks in ``workers`` threads, each limited to one intra-op thread (inline when workers <= 1)."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    from concurrent.futures import ThreadPoolExecutor

    before = torch.get_num_threads()
    try:  # OpenMP thread counts are per calling thread: set them in every worker
        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for fut in [pool.submit(task) for task in tasks]:
                fut.result()
    finally:
        torch.set_num_threads(before)


def rank_sampled(
    model: RelationModel,
    edges: EvalEdges,
    target: str,
    layout: TypeLayout,
    cache: TableCache,
    filt: FilterIndex | None,
    num_batch_negatives: int,
    num_uniform_negatives: int,
    batch_size: int,
    generator: np.random.Generator,
    workers: int = 1,
) -> SideCounts:
    """PBG-style sampled ranking: each truth against the truths of its chunk of ``num_batch_negatives`` edges
    plus ``num_uniform_negatives`` entities drawn uniformly (with replacement) from the truth's partition.

    Chunks never mix candidate types or truth partitions.  A candidate that *is* the true entity (itself or a
    repeat) is never a negative; in the filtered protocol known true candidates are removed as well.  The
    uniform samples are drawn up front in chunk order, so results do not depend on ``workers``.
    """
    n = len(edges)
    counts = SideCounts(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))
    in_batch = num_batch_negatives > 0
    chunk = num_batch_negatives if in_batch else batch_size
    plan, ctype, tpart, toff = _plan(edges, target, layout, model, chunk)
    known_side = _other(target)
    dev = cache.device
    tasks: list[Callable[[], None]] = []
    for a, b in zip(plan.starts[:-1], plan.starts[1:]):
        idx = plan.order[a:b]
        ct_name = layout.type_names[int(ctype[idx[0]])]
        tp = int(tpart[idx[0]])
        size = int(layout.bounds[ct_name][tp + 1] - layout.bounds[ct_name][tp])
        uniform = generator.integers(0, size, size=num_uniform_negatives, dtype=np.int64)

        def task(idx=idx, ct_name=ct_name, tp=tp, uniform=uniform) -> None:
            m = len(idx)
            rel_key = int(edges.rel[idx[0]]) if model.candidates_need_relation(target) else None
            with torch.inference_mode():
                cands = cache.prepared(target, ct_name, tp, rel_key)
                known = _known_embeddings(cache, layout, edges, idx, known_side, cands.shape[1])
                query = model.query(target, known, torch.from_numpy(edges.rel[idx]).to(dev))
                cand_off = np.concatenate([toff[idx], uniform])
                scores = model.comparator.matrix(query, cands.index_select(0, torch.from_numpy(cand_off).to(dev)))
                pos = torch.diagonal(scores[:, :m]).clone()
                cand_pos = layout.bounds[ct_name][tp] + cand_off
                mask = cand_pos[None, :] == edges.side(target)[idx][:, None]
                if not in_batch:
                    mask[:, :m] = True  # the chunk's truths are scored only to read each row's positive
                if filt is not None:
                    qidx = filt.query_index(edges.rel[idx], edges.side(known_side)[idx])
                    mask |= filt.contains(qidx[:, None], cand_pos[None, :])
                scores[torch.from_numpy(mask).to(dev)] = float("-inf")
                gt, ge = _count(scores, pos)
            counts.greater[idx] = gt.cpu().numpy()
            counts.equal[idx] = (ge - gt).cpu().numpy()
            counts.num_candidates[idx] = mask.shape[1] - mask.sum(1)

        tasks.append(task)
    run_tasks(tasks, workers if dev.type == "cpu" else 1)
    return counts

"""Faiss indexes over the prepared vectors of one entity-type partition.

The index space of a type is ``comparator.prepare(θ)`` with the metric that orders it like the comparator:
inner product for ``dot`` and ``cos`` (``cos`` prepares by normalising), L2 for ``l2`` and ``squared_l2``
(``-sqrt(d)`` and ``-d`` are both decreasing in the squared distance faiss returns).  A comparator missing
from :data:`METRICS` has no index space, and its queries are scanned through the model instead.

Kinds: ``flat`` (exact: IndexFlatIP / IndexFlatL2) and ``ivf`` (IndexIVFFlat: a k-means coarse quantizer
with ``nlist`` lists, ``nprobe`` of which are searched).  Faiss is imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tbg.errors import TbgError

# comparator -> (faiss metric, whether comparator.prepare is the identity)
METRICS: dict[str, tuple[str, bool]] = {
    "dot": ("ip", True),
    "cos": ("ip", False),
    "l2": ("l2", True),
    "squared_l2": ("l2", True),
}
KINDS = ("flat", "ivf")
# the index kind ``auto`` picks: flat up to this many rows in a partition, ivf above
EXACT_MAX_ROWS = 1_000_000
ADD_BLOCK_ROWS = 1 << 18
TRAIN_POINTS_PER_LIST = 39  # faiss's own lower bound for stable k-means
TRAIN_POINTS_PER_LIST_MAX = 64  # k-means sample per list (cost grows with it, recall barely does)


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError:
        raise TbgError("queries need faiss: pip install faiss-cpu (or tbg[query])") from None
    return faiss


@dataclass(frozen=True)
class IndexSpec:
    """What is built for one partition: kind, metric and (ivf) number of lists."""

    kind: str
    metric: str
    nlist: int = 0

    @property
    def tag(self) -> str:
        """Short name used in cache file names, e.g. ``flat-ip`` or ``ivf4096-l2``."""
        return f"{self.kind}-{self.metric}" if self.kind == "flat" else f"{self.kind}{self.nlist}-{self.metric}"


def default_nlist(rows: int) -> int:
    """A power of two near sqrt(rows), at most rows / 39 so k-means has enough points per list."""
    target = max(1.0, math.sqrt(max(rows, 1)))
    nlist = 2 ** round(math.log2(target))
    return int(max(1, min(nlist, rows // TRAIN_POINTS_PER_LIST, 1 << 16)))


def choose_spec(kind: str, metric: str, rows: int, nlist: int | None = None) -> IndexSpec:
    """``kind`` is flat, ivf or auto (flat up to :data:`EXACT_MAX_ROWS` rows, else ivf)."""
    if kind == "auto":
        kind = "flat" if rows <= EXACT_MAX_ROWS else "ivf"
    if kind not in KINDS:
        raise TbgError(f"unknown index kind {kind!r} (choices: auto, {', '.join(KINDS)})")
    if kind == "flat":
        return IndexSpec("flat", metric)
    n = int(nlist) if nlist else default_nlist(rows)
    return IndexSpec("ivf", metric, max(1, min(n, max(rows, 1))))


def default_nprobe(spec: IndexSpec) -> int:
    """Lists searched when neither the query nor a calibration (tbg.query.calibration) says otherwise."""
    return max(1, min(spec.nlist, max(16, spec.nlist // 8)))


@dataclass
class QueryIndex:
    """A faiss index, its default nprobe and, for inner-product IVF, the norm bound of its MIPS-to-L2 reduction.

    IVF's coarse quantizer assigns by the metric, and k-means lists assigned by inner product serve maximum-inner-
    product search badly (long vectors dominate every list).  So an inner-product IVF stores ``[y, sqrt(M² - |y|²)]``
    (M = the largest |y| of the partition) in an L2 index and searches ``[q, 0]``: ``|q'-y'|² = |q|² + M² - 2q·y``
    orders candidates exactly like q·y, and the inner product is recovered from the distance.
    """

    index: Any
    norm: float | None = None
    nprobe: int | None = None  # lists searched by default (ivf: calibrated, see tbg.query.calibration)
    recall: float | None = None  # the calibration's measured recall@10 at ``nprobe``

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Dimension of the vectors it indexes (the augmented coordinate not counted)."""
        return int(self.index.d) - (0 if self.norm is None else 1)

    @property
    def nbytes(self) -> int:
        nlist = int(getattr(self.index, "nlist", 0))
        return self.ntotal * (int(self.index.d) * 4 + (8 if nlist else 0)) + nlist * int(self.index.d) * 4


def _augment(x: np.ndarray, norm: float) -> np.ndarray:
    sq = np.maximum(np.float32(norm) ** 2 - np.einsum("ij,ij->i", x, x), 0)
    return np.ascontiguousarray(np.concatenate([x, np.sqrt(sq)[:, None]], axis=1), dtype=np.float32)


def build_index(
    spec: IndexSpec, rows: int, dim: int, block: Callable[[int, int], np.ndarray], sample: Callable[[int], np.ndarray]
) -> QueryIndex:
    """A faiss index of ``rows`` prepared vectors; ``block(a, b)`` returns rows [a, b) in index space and
    ``sample(n)`` a seeded sample of n rows (ivf training).  Vectors are added in bounded blocks."""
    faiss = faiss_module()
    spans = [(a, min(rows, a + ADD_BLOCK_ROWS)) for a in range(0, rows, ADD_BLOCK_ROWS)]
    if spec.kind == "flat":
        index = faiss.IndexFlat(dim, faiss.METRIC_INNER_PRODUCT if spec.metric == "ip" else faiss.METRIC_L2)
        for a, b in spans:
            index.add(np.ascontiguousarray(block(a, b), dtype=np.float32))
        return QueryIndex(index)
    norm = None
    if spec.metric == "ip":
        norms = [float(np.einsum("ij,ij->i", x, x).max(initial=0)) for x in (block(a, b) for a, b in spans)]
        norm = float(np.sqrt(max(norms, default=0.0)))
    width = dim + (norm is not None)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(width), width, spec.nlist, faiss.METRIC_L2)
    index.cp.seed = 1234
    train = np.ascontiguousarray(sample(min(rows, spec.nlist * TRAIN_POINTS_PER_LIST_MAX)), dtype=np.float32)
    index.train(_augment(train, norm) if norm is not None else train)
    for a, b in spans:
        x = np.ascontiguousarray(block(a, b), dtype=np.float32)
        index.add(_augment(x, norm) if norm is not None else x)
    return QueryIndex(index, norm)


def search(index: QueryIndex, queries: np.ndarray, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) [n, k]: keys ordered like the comparator (higher = better), offset -1 where missing.

    Keys of one metric are comparable across partitions: the inner product, or minus the squared distance.
    """
    faiss = faiss_module()
    k = max(1, int(k))
    q = np.ascontiguousarray(queries, dtype=np.float32)
    raw = index.index
    if hasattr(raw, "nprobe"):
        raw.nprobe = int(nprobe or index.nprobe or default_nprobe(IndexSpec("ivf", "l2", int(raw.nlist))))
    if index.norm is not None:
        dist, labels = raw.search(np.concatenate([q, np.zeros((len(q), 1), np.float32)], axis=1), k)
        keys = (np.einsum("ij,ij->i", q, q)[:, None] + np.float32(index.norm) ** 2 - dist) / 2
    else:
        dist, labels = raw.search(q, k)
        keys = dist if raw.metric_type == faiss.METRIC_INNER_PRODUCT else -dist
    keys = np.where(labels >= 0, keys, -np.inf).astype(np.float32)
    return keys, labels.astype(np.int64)

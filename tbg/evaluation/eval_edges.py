"""Evaluation edges as global positions (numpy only).

Buckets store edges as offsets inside their partitions.  Evaluation works with the *position* of an entity in
its type (``bounds[partition] + offset``), a bijection with dense ids that needs no permutation lookups:
partition and offset are recovered by the type's :class:`tbg.graph.PartitionLayout`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tbg.errors import GraphError
from tbg.graph import Graph


@dataclass
class EvalEdges:
    """Edges of a split: lhs/rhs positions within the relation's lhs/rhs entity type, relation ids."""

    lhs: np.ndarray
    rhs: np.ndarray
    rel: np.ndarray

    def __len__(self) -> int:
        return int(self.rel.shape[0])

    def side(self, side: str) -> np.ndarray:
        return self.lhs if side == "lhs" else self.rhs

    @staticmethod
    def concat(parts: Sequence[EvalEdges]) -> EvalEdges:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return EvalEdges(empty, empty, empty)
        cols = (np.concatenate([getattr(p, k) for p in parts]).astype(np.int64) for k in ("lhs", "rhs", "rel"))
        return EvalEdges(*cols)


class TypeLayout:
    """Per-relation entity types and per-type partition bounds, as arrays for vectorised lookups."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.types = graph.entity_types
        self.type_names = list(graph.entity_types)
        self.bounds = {name: t.bounds for name, t in graph.entity_types.items()}
        self.counts = {name: t.count for name, t in graph.entity_types.items()}
        self.type_of = {
            "lhs": np.array([self.type_names.index(r.lhs) for r in graph.relations], dtype=np.int64),
            "rhs": np.array([self.type_names.index(r.rhs) for r in graph.relations], dtype=np.int64),
        }

    def base(self, side: str, part: int) -> np.ndarray:
        """bounds[type(rel)][part] for every relation (-1 where the type has fewer partitions)."""
        out = np.full(len(self.graph.relations), -1, dtype=np.int64)
        for r, t in enumerate(self.type_of[side]):
            b = self.bounds[self.type_names[t]]
            if part < len(b) - 1:
                out[r] = b[part]
        return out

    def locate(self, etype: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(partition, offset) of positions within ``etype``."""
        return self.types[etype].locate(positions)

    @property
    def max_count(self) -> int:
        return max(self.counts.values())


def iter_split(graph: Graph, layout: TypeLayout, split: str, chunk_edges: int = 1 << 20) -> Iterator[EvalEdges]:
    """Every edge of ``split`` as positions, bucket by bucket in bounded chunks."""
    for i, j in graph.buckets(split):
        lbase, rbase = layout.base("lhs", i), layout.base("rhs", j)
        for block in graph.iter_bucket(split, i, j, chunk_edges):
            rel = block.rel.astype(np.int64)
            if rel.size and (rel.min() < 0 or rel.max() >= len(graph.relations)):
                raise GraphError(f"{graph.bucket_path(split, i, j)}: relation id out of range")
            lb, rb = lbase[rel], rbase[rel]
            if (lb < 0).any() or (rb < 0).any():
                raise GraphError(f"{graph.bucket_path(split, i, j)}: bucket ({i}, {j}) exceeds a type's partitions")
            yield EvalEdges(lb + block.lhs, rb + block.rhs, rel)


@dataclass
class CandidateSet:
    """Which entities of each type are candidates: ``excluded[type][p]`` holds the sorted offsets of partition
    ``p`` that are *not* (their scores are set to -inf), ``counts[type]`` how many are."""

    name: str
    excluded: dict[str, list[np.ndarray]]
    counts: dict[str, int]

    @staticmethod
    def all(layout: TypeLayout) -> CandidateSet:
        """Every declared entity (in indices mode that includes ids no edge mentions)."""
        empty = np.zeros(0, dtype=np.int64)
        excluded = {name: [empty] * (len(b) - 1) for name, b in layout.bounds.items()}
        return CandidateSet("all", excluded, dict(layout.counts))

    @staticmethod
    def seen(graph: Graph, layout: TypeLayout, chunk_edges: int = 1 << 20) -> CandidateSet:
        """Entities that occur in an edge of any imported split (PBG's, PyKEEN's and OGB's candidate set)."""
        seen = {name: np.zeros(count, dtype=bool) for name, count in layout.counts.items()}
        for split in graph.splits:
            for block in iter_split(graph, layout, split, chunk_edges):
                for side in ("lhs", "rhs"):
                    types = layout.type_of[side][block.rel]
                    pos = block.side(side)
                    for t in np.unique(types):
                        seen[layout.type_names[t]][pos if len(layout.type_names) == 1 else pos[types == t]] = True
        excluded = {
            name: [np.flatnonzero(~seen[name][b[p] : b[p + 1]]) for p in range(len(b) - 1)]
            for name, b in layout.bounds.items()
        }
        return CandidateSet("seen", excluded, {name: int(m.sum()) for name, m in seen.items()})


def load_split(graph: Graph, split: str, limit: int | None = None) -> EvalEdges:
    """All edges of ``split`` (or its first ``limit`` edges in bucket order); an empty split is an error."""
    layout = TypeLayout(graph)
    if graph.num_edges(split) == 0:
        raise GraphError(f"{graph.path}: split {split!r} has no edges to evaluate")
    parts, total = [], 0
    for block in iter_split(graph, layout, split):
        parts.append(block)
        total += len(block)
        if limit is not None and total >= limit:
            break
    edges = EvalEdges.concat(parts)
    if limit is not None and len(edges) > limit:
        edges = EvalEdges(edges.lhs[:limit], edges.rhs[:limit], edges.rel[:limit])
    return edges

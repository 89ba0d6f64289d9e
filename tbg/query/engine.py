"""The query engine of one checkpoint: ``neighbors`` and ``predict`` by entity name, best first.

``predict`` ranks candidates for (x, r, ?) (``lhs=``) or (?, r, y) (``rhs=``) exactly by the model's score
(:class:`~tbg.model.scoring.RelationModel`: the query side's operator applied, candidates prepared as in
``tbg eval``); ``neighbors`` ranks entities of the same type by the comparator on their vectors.  Answers are
JSON-ready: ``{"query": {...}, "results": [{"type", "name", "score"}, ...]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tbg.checkpoint import Checkpoint
from tbg.config import Config
from tbg.errors import QueryError
from tbg.graph import Graph
from tbg.model.scoring import RelationModel
from tbg.query.entities import EntityNames
from tbg.query.index import faiss_module
from tbg.query.index_cache import IndexCache
from tbg.query.plan import QueryGroup, index_queries
from tbg.query.search import TopK, top_k
from tbg.query.tables import DEFAULT_INDEX_BYTES, CandidateTables

Answer = dict[str, Any]


@dataclass(frozen=True)
class Prediction:
    """One predict query: the known entity's name on ``side`` ("lhs" or "rhs") of relation ``relation``."""

    relation: str
    side: str
    name: str
    where: str = ""  # e.g. "queries.tsv row 3", prefixed to errors


def parse_entity(text: str, types: Sequence[str]) -> tuple[str, str]:
    """``TYPE:NAME`` -> (type, name); the type must be one of ``types``."""
    etype, sep, name = str(text).partition(":")
    if not sep or etype not in types:
        raise QueryError(f"{text!r}: expected TYPE:NAME with TYPE one of {', '.join(types)}")
    return etype, name


class QueryEngine:
    """Neighbours and predictions over one checkpoint (indexes cached in its save_dir)."""

    def __init__(
        self,
        cfg: Config,
        graph: Graph,
        ckpt: Checkpoint,
        model: RelationModel,
        *,
        index: str = "auto",
        nprobe: int | None = None,
        nlist: int | None = None,
        cache_dir: str | None = "default",
        max_index_bytes: int = DEFAULT_INDEX_BYTES,
    ) -> None:
        self.cfg = cfg
        self.graph = graph
        self.model = model.eval()
        self.comparator_name = str(cfg.model.comparator)
        self.relations = {r.name: i for i, r in enumerate(cfg.model.relations)}
        self.nprobe = nprobe
        self._names = {t: EntityNames(graph, t) for t in graph.entity_types}
        cache = IndexCache(ckpt, cache_dir, self.comparator_name)
        bounds = {t: et.bounds for t, et in graph.entity_types.items()}
        self.tables = CandidateTables(
            ckpt, bounds, model.comparator, self.comparator_name, cache, index, nlist, cfg.runtime.seed, max_index_bytes
        )

    @classmethod
    def open(cls, cfg: Config, checkpoint: str | None = None, **kw: Any) -> QueryEngine:
        """The config's graph and latest checkpoint (or ``checkpoint``), checked to fit each other."""
        from tbg.evaluation.checkpoint_eval import open_trained

        graph, ckpt, model = open_trained(cfg, checkpoint)
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
            faiss_module().omp_set_num_threads(cfg.runtime.num_threads)
        return cls(cfg, graph, ckpt, model, **kw)

    # ------------------------------------------------------------------ helpers
    def _type(self, etype: str) -> str:
        if etype not in self._names:
            raise QueryError(f"unknown entity type {etype!r} (types: {', '.join(self._names)})")
        return etype

    def relation_id(self, name: str, where: str = "") -> int:
        """Index of relation ``name``; unknown is one QueryError (prefixed by ``where``)."""
        if name not in self.relations:
            prefix = f"{where}: " if where else ""
            raise QueryError(f"{prefix}unknown relation {name!r} (relations: {', '.join(self.relations)})")
        return self.relations[name]

    def _raw(self, etype: str, positions: np.ndarray) -> torch.Tensor:
        """Raw embeddings of positions, gathered shard by shard."""
        bounds = self.tables.bounds[etype]
        dim = self.cfg.model.table(etype).embedding_dim
        out = np.empty((len(positions), dim), dtype=np.float32)
        part = np.searchsorted(bounds, positions, side="right") - 1
        for p in np.unique(part):
            m = part == p
            out[m] = self.tables.shard(etype, int(p)).take(positions[m] - bounds[p])
        return torch.from_numpy(out)

    def _answers(self, ctype: str, result: TopK, queries: list[dict[str, Any]]) -> list[Answer]:
        names = self._names[ctype].names(result.positions.reshape(-1)).reshape(result.positions.shape)
        out = []
        for q, row_names, row_scores, row_pos in zip(queries, names, result.scores, result.positions):
            keep = row_pos >= 0
            results = [
                {"type": ctype, "name": str(n), "score": float(s)}
                for n, s in zip(row_names[keep].tolist(), row_scores[keep].tolist())
            ]
            out.append({"query": q, "results": results})
        return out

    def parse_prediction(self, lhs: str, relation: str, rhs: str, where: str = "") -> Prediction:
        """A prediction from ``TYPE:NAME``/``?`` text (query files, CLI), its type checked against the relation."""
        prefix = f"{where}: " if where else ""
        if (lhs == "?") == (rhs == "?"):
            raise QueryError(f"{prefix}exactly one of lhs / rhs must be '?'")
        side, text = ("lhs", lhs) if rhs == "?" else ("rhs", rhs)
        rel = self.relation_id(relation, where)
        try:
            etype, name = parse_entity(text, list(self._names))
        except QueryError as exc:
            raise QueryError(f"{prefix}{exc}") from None
        want = getattr(self.cfg.model.relations[rel], side)
        if etype != want:
            raise QueryError(f"{prefix}relation {relation!r} has {side} type {want!r}, not {etype!r}")
        return Prediction(relation, side, name, where)

    # ------------------------------------------------------------------ queries
    def neighbors(self, etype: str, names: str | Sequence[str], k: int = 10) -> Answer | list[Answer]:
        """Most similar entities of ``etype`` to each name (the entity itself excluded), by the comparator."""
        single = isinstance(names, str)
        batch = [names] if single else list(names)
        answers = self.neighbors_batch([(etype, n) for n in batch], k)
        return answers[0] if single else answers

    def neighbors_batch(
        self, queries: Sequence[tuple[str, str]], k: int = 10, where: Sequence[str] = ()
    ) -> list[Answer]:
        """Answers in the order of ``queries`` ((type, name) pairs); ``where`` labels each for errors."""
        _check_k(k)
        order = list(range(len(queries)))
        by_type: dict[str, list[int]] = {}
        for i in order:
            by_type.setdefault(self._type(queries[i][0]), []).append(i)
        answers: list[Answer | None] = [None] * len(queries)
        groups, members = [], []
        with torch.inference_mode():
            for etype, idx in by_type.items():
                pos = self._names[etype].positions(
                    [queries[i][1] for i in idx], [where[i] for i in idx] if where else ""
                )
                q = self.model.comparator.prepare(self._raw(etype, pos))
                iq = q.numpy() if self.tables.has_index_space else None
                rows = np.arange(len(idx), dtype=np.int64)
                groups.append(QueryGroup(etype, q, self.model.comparator.prepare, iq, rows, pos))
                members.append(idx)
        for group, idx, result in zip(groups, members, top_k(self.tables, groups, k, self.nprobe)):
            qs = [{"type": group.ctype, "name": queries[i][1]} for i in idx]
            for i, ans in zip(idx, self._answers(group.ctype, result, qs)):
                answers[i] = ans
        return answers  # type: ignore[return-value]

    def predict(
        self, relation: str, *, lhs: str | None = None, rhs: str | None = None, k: int = 10, exclude_known: bool = False
    ) -> Answer:
        """Top rhs for (lhs, relation, ?) or top lhs for (?, relation, rhs); names without a TYPE: prefix."""
        if (lhs is None) == (rhs is None):
            raise QueryError("give exactly one of lhs / rhs")
        side, name = ("lhs", lhs) if lhs is not None else ("rhs", rhs)
        return self.predict_batch([Prediction(relation, side, str(name))], k, exclude_known)[0]

    def predict_batch(self, queries: Sequence[Prediction], k: int = 10, exclude_known: bool = False) -> list[Answer]:
        """Answers in the order of ``queries``; queries of one (relation, side) are searched together."""
        _check_k(k)
        rels = np.array([self.relation_id(q.relation, q.where) for q in queries], dtype=np.int64)
        sides = np.array([q.side for q in queries])
        if not np.isin(sides, ("lhs", "rhs")).all():
            raise QueryError("a prediction's known side must be lhs or rhs")
        positions = np.zeros(len(queries), dtype=np.int64)
        specs = self.cfg.model.relations
        for side in ("lhs", "rhs"):
            for r in np.unique(rels[sides == side]):
                idx = np.flatnonzero((sides == side) & (rels == r))
                etype = getattr(specs[r], side)
                positions[idx] = self._names[etype].positions(
                    [queries[i].name for i in idx], [queries[i].where for i in idx]
                )
        filters = self._filters(rels, sides, positions) if exclude_known else None
        answers: list[Answer | None] = [None] * len(queries)
        groups, members = [], []
        with torch.inference_mode():
            for side in ("lhs", "rhs"):
                target = "rhs" if side == "lhs" else "lhs"
                for r in np.unique(rels[sides == side]):
                    idx = np.flatnonzero((sides == side) & (rels == r))
                    groups.append(self._predict_group(int(r), side, target, positions[idx], filters))
                    members.append(idx)
        for group, idx, result in zip(groups, members, top_k(self.tables, groups, k, self.nprobe)):
            spec = specs[int(rels[idx[0]])]
            side = str(sides[idx[0]])
            qs = [{side: {"type": getattr(spec, side), "name": queries[i].name}, "relation": spec.name} for i in idx]
            for i, ans in zip(idx, self._answers(group.ctype, result, qs)):
                answers[i] = ans
        return answers  # type: ignore[return-value]

    def _predict_group(self, r: int, side: str, target: str, pos: np.ndarray, filters: Any) -> QueryGroup:
        spec = self.cfg.model.relations[r]
        known = self._raw(getattr(spec, side), pos)
        q = self.model.query(target, known, torch.full((len(pos),), r, dtype=torch.long))
        iq = index_queries(self.model, self.comparator_name, target, r, q) if self.tables.has_index_space else None
        ex_rows = ex_pos = np.zeros(0, dtype=np.int64)
        if filters is not None:
            filt = filters[target]
            ex_rows, ex_pos = filt.lookup(filt.query_index(np.full(len(pos), r, dtype=np.int64), pos))
        ctype = getattr(spec, target)

        def candidates(raw: torch.Tensor, r: int = r, target: str = target) -> torch.Tensor:
            return self.model.candidates(target, raw, r)

        return QueryGroup(ctype, q, candidates, iq, ex_rows, ex_pos)

    def _filters(self, rels: np.ndarray, sides: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
        """Known edges (every imported split) of the queries, as the filtered evaluation indexes them."""
        from tbg.evaluation.eval_edges import EvalEdges
        from tbg.evaluation.filter import build_filters

        lhs = np.where(sides == "lhs", positions, 0)
        rhs = np.where(sides == "rhs", positions, 0)
        return build_filters(self.graph, EvalEdges(lhs, rhs, rels), self.graph.splits)


def _check_k(k: int) -> None:
    if int(k) < 1:
        raise QueryError(f"k must be >= 1, got {k}")

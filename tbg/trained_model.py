"""A trained model in memory: entity names, vectors and edge scores of one checkpoint (``tbg.load``).

Scores come from :class:`tbg.model.scoring.RelationModel`, the function training and ``tbg eval`` use, with the
checkpoint's relation parameters; vectors are the checkpoint's shards in dense-id order (as ``tbg export``
writes them).  A type's vectors are read on first use and then kept.  ``neighbors``/``predict`` answer top-k
queries through :mod:`tbg.query` (faiss indexes per partition, every score recomputed by the same function).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tbg.checkpoint import Checkpoint, open_checkpoint
from tbg.config import Config, parse_config
from tbg.config.loading import read_yaml
from tbg.errors import CheckpointError, QueryError
from tbg.graph import Graph
from tbg.query.entities import EntityNames

if TYPE_CHECKING:
    from tbg.model.scoring import RelationModel
    from tbg.query.engine import QueryEngine


class TrainedModel:
    """Entity vectors and the score function of one checkpoint, addressed by entity and relation names."""

    def __init__(self, cfg: Config, graph: Graph, checkpoint: Checkpoint, relation_model: RelationModel) -> None:
        self.config = cfg
        self.graph = graph
        self.checkpoint = checkpoint
        self._relation_model = relation_model
        self._engines: dict[tuple, object] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._names: dict[str, EntityNames] = {}

    @classmethod
    def open(cls, path: str, graph_dir: str | None = None) -> TrainedModel:
        """The checkpoint at ``path`` (save_dir: its latest; or a checkpoints or version dir), with the config it
        was trained with; ``graph_dir`` overrides that config's graph dir (e.g. after moving the run)."""
        import attrs

        from tbg.evaluation.checkpoint_eval import open_trained

        with open_checkpoint(path) as first:  # (pinned until open_trained pins it for the model's life)
            source = f"{first.path}/config.yaml"
            try:
                data = read_yaml(first.config_text())
            except FileNotFoundError:
                raise CheckpointError(
                    f"{source}: missing (the checkpoint does not say which config trained it)"
                ) from None
            cfg = parse_config(data, source)
            if graph_dir is not None:
                cfg = attrs.evolve(cfg, graph=attrs.evolve(cfg.graph, dir=graph_dir))
            graph, ckpt, model = open_trained(cfg, first.path)
        return cls(cfg, graph, ckpt, model)

    def close(self) -> None:
        """Release the graph dir's reader lock and the checkpoint's pin (held since :meth:`open`, so that no
        import replaces the graph and no pruning removes the version while the model reads them lazily);
        dropping the object does the same."""
        self.checkpoint.release()
        self.graph.release()

    def __enter__(self) -> TrainedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ entities
    @property
    def entity_types(self) -> list[str]:
        return [t.name for t in self.config.model.embeddings.tables]

    @property
    def relations(self) -> list[str]:
        return [r.name for r in self.config.model.relations]

    def entity_names(self, etype: str) -> np.ndarray:
        """Names of ``etype``'s entities in dense-id order (indices mode: the ids as strings)."""
        return self.graph.names(self._type(etype))

    def vectors(self, etype: str) -> np.ndarray:
        """float32 [count, dim]; row i is the entity ``entity_names(etype)[i]`` (read-only, shared)."""
        if etype not in self._vectors:
            from tbg.export import dense_embeddings

            name = self._type(etype)
            vectors = dense_embeddings(self.graph, self.checkpoint, name, self.config.model.table(name).embedding_dim)
            vectors.setflags(write=False)
            self._vectors[etype] = vectors
        return self._vectors[etype]

    def vector(self, etype: str, name: str | int) -> np.ndarray:
        """The vector of one entity, by name (indices mode: its id)."""
        return self.vectors(etype)[self.ids(etype, [name])[0]]

    def ids(self, etype: str, names: Sequence[str | int]) -> np.ndarray:
        """Dense ids of entity names (indices mode: ids, or their decimal strings); an unknown name is a
        :class:`QueryError` (the lookup of ``tbg neighbors``/``predict``, :class:`tbg.query.entities.EntityNames`)."""
        if etype not in self._names:
            self._names[etype] = EntityNames(self.graph, self._type(etype))
        return self._names[etype].ids(names)

    # ------------------------------------------------------------------ scores
    def score(
        self,
        lhs_names: Sequence[str | int],
        rel: str | int,
        rhs_names: Sequence[str | int],
        target: Literal["rhs", "lhs"] = "rhs",
    ) -> np.ndarray:
        """Scores [N] of the edges (lhs_names[i], rel, rhs_names[i]) under the model's score function.

        ``target`` is the side being predicted, as in ranking: ``rhs`` scores (x, r, ?) candidates, ``lhs``
        (?, r, y).  With ``relation_sides: both`` the two differ (an operator per side); higher is better.
        """
        import torch

        if len(lhs_names) != len(rhs_names):
            raise QueryError(f"score: {len(lhs_names)} lhs names but {len(rhs_names)} rhs names")
        if target not in ("rhs", "lhs"):
            raise QueryError(f"score: target must be rhs or lhs, got {target!r}")
        r = self._relation(rel)
        relation = self.config.model.relations[r]
        lhs = torch.from_numpy(self.vectors(relation.lhs)[self.ids(relation.lhs, lhs_names)])
        rhs = torch.from_numpy(self.vectors(relation.rhs)[self.ids(relation.rhs, rhs_names)])
        rels = torch.full((len(lhs_names),), r, dtype=torch.long)
        with torch.inference_mode():
            scores = self._relation_model.score_positive(target, lhs, rhs, rels)
        return scores.float().numpy()

    # ------------------------------------------------------------------ queries (tbg/query, docs/queries.md)
    def queries(
        self, *, index: str = "auto", nprobe: int | None = None, nlist: int | None = None, cache: bool = True
    ) -> QueryEngine:
        """The query engine of this checkpoint: faiss indexes (flat or ivf; ``auto`` = ivf above 1M rows per
        partition), IVF ones cached in the save_dir unless ``cache=False``.  Kept per option set."""
        from tbg.query.engine import QueryEngine

        key = (index, nprobe, nlist, cache)
        if key not in self._engines:
            self._engines[key] = QueryEngine(
                self.config,
                self.graph,
                self.checkpoint,
                self._relation_model,
                index=index,
                nprobe=nprobe,
                nlist=nlist,
                cache_dir="default" if cache else None,
            )
        return self._engines[key]  # type: ignore[return-value]

    def neighbors(self, etype: str, names: str | Sequence[str], k: int = 10, **options: Any) -> Any:
        """Most similar entities of ``etype`` to ``names`` by the comparator, best first, the entity itself excluded:
        ``{"query": {...}, "results": [{"type", "name", "score"}, ...]}`` per name (one dict for one name).
        ``options`` go to :meth:`queries`."""
        return self.queries(**options).neighbors(etype, names, k)

    def predict(
        self,
        relation: str,
        *,
        lhs: str | None = None,
        rhs: str | None = None,
        k: int = 10,
        exclude_known: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """Top rhs for (lhs, relation, ?) or top lhs for (?, relation, rhs) under the model's score (the ranking
        ``tbg eval`` computes); ``exclude_known`` drops candidates of known edges.  ``options``: :meth:`queries`."""
        return self.queries(**options).predict(relation, lhs=lhs, rhs=rhs, k=k, exclude_known=exclude_known)

    # ------------------------------------------------------------------ helpers
    def _type(self, etype: str) -> str:
        if etype not in self.entity_types:
            raise QueryError(f"unknown entity type {etype!r} (types: {', '.join(self.entity_types)})")
        return etype

    def _relation(self, rel: str | int) -> int:
        names = self.relations
        if isinstance(rel, str):
            if rel not in names:
                raise QueryError(f"unknown relation {rel!r} (relations: {', '.join(names)})")
            return names.index(rel)
        if not 0 <= rel < len(names):
            raise QueryError(f"relation index {rel} out of range ({len(names)} relations)")
        return int(rel)

    def __repr__(self) -> str:
        types = ", ".join(f"{t}: {self.graph.entity_types[t].count}" for t in self.entity_types)
        return f"TrainedModel({self.checkpoint.path}; {types}; {len(self.relations)} relations)"

"""Graph ↔ config agreement, as one-line errors naming the config key at fault."""

from __future__ import annotations

import hashlib
import json

from tbg.config import Config
from tbg.errors import TbgError
from tbg.graph import Graph


class GraphMismatchError(TbgError):
    """The imported graph does not match the config (re-import, or fix the config)."""


def check_graph(cfg: Config, graph: Graph) -> None:
    where = f"graph at {graph.path}"
    tables = cfg.model.embeddings.tables
    for i, table in enumerate(tables):
        etype = graph.entity_types.get(table.name)
        if etype is None:
            have = ", ".join(graph.entity_types)
            raise GraphMismatchError(
                f"model.embeddings.tables[{i}].name: {where} has no entity type {table.name!r} (has: {have});"
                " re-run `tbg import`"
            )
        if table.num_embeddings is not None and table.num_embeddings != etype.count:
            raise GraphMismatchError(
                f"model.embeddings.tables[{i}].num_embeddings: {table.num_embeddings} but the {where} has"
                f" {etype.count} {table.name!r} entities"
            )
        if table.num_partitions != etype.num_partitions:
            raise GraphMismatchError(
                f"model.embeddings.tables[{i}].num_partitions: {table.num_partitions} but the {where} was imported"
                f" with {etype.num_partitions}; re-run `tbg import`"
            )
    extra = set(graph.entity_types) - {t.name for t in tables}
    if extra:
        raise GraphMismatchError(
            f"model.embeddings.tables: {where} has entity types not in the config: {sorted(extra)}"
        )
    rels = cfg.model.relations
    if len(rels) != len(graph.relations):
        raise GraphMismatchError(
            f"model.relations: the config has {len(rels)} relations, the {where} {len(graph.relations)};"
            " re-run `tbg import`"
        )
    for i, (rel, grel) in enumerate(zip(rels, graph.relations)):
        if (rel.name, rel.lhs, rel.rhs) != (grel.name, grel.lhs, grel.rhs):
            raise GraphMismatchError(
                f"model.relations[{i}]: {rel.name} ({rel.lhs}->{rel.rhs}) but the {where} has"
                f" {grel.name} ({grel.lhs}->{grel.rhs}) at this position; re-run `tbg import`"
            )
    if "train" not in graph.splits or graph.num_edges("train") == 0:
        raise GraphMismatchError(f"train_data: the {where} has no training edges")


def model_fingerprint(cfg: Config) -> str:
    """What a checkpoint's tensors depend on: shapes, partitions, operators, comparator, sides."""
    m = cfg.model
    data = {
        "tables": [(t.name, t.embedding_dim, t.num_partitions, str(t.data_type)) for t in m.embeddings.tables],
        "relations": [(r.name, r.lhs, r.rhs, str(r.operator)) for r in m.relations],
        "comparator": str(m.comparator),
        "sides": str(m.relation_sides),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

"""The `model` section: entity tables, relations, comparator, loss."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from tbg.config.fields import ConfigEnum, FieldProblem, finite, non_empty, positive, setting
from tbg.config.optimizers import OptimizerConfig

PartitionCount = int | Literal["auto"]


def _partition_count(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value != "auto" and not (isinstance(value, int) and value > 0):
        raise FieldProblem(attr.name, f"must be a count > 0 or auto, got {value!r}")


class DataType(ConfigEnum):
    fp32 = "fp32"
    fp16 = "fp16"


class RelationSides(ConfigEnum):
    both = "both"
    rhs = "rhs"


@attrs.define(kw_only=True)
class EmbeddingSnapshot:
    """A pretrained snapshot (accepted for TwHIN compatibility, unused by both)."""

    emb_name: str = setting("accepted, unused")
    embedding_snapshot_uri: str = setting("accepted, unused")


@attrs.define(kw_only=True)
class EmbeddingTableConfig:
    """One entity type (TwHIN: one torchrec table)."""

    name: str = setting(
        "entity type; relations refer to it by this name", twhin="table = feature name", validator=non_empty
    )
    num_embeddings: int | None = setting(
        "entity count: ids must be < num_embeddings; optional in `graph.id_mode: names` (the importer counts)",
        twhin="table rows (required)",
        default=None,
        validator=positive,
        default_doc="required in indices id mode",
    )
    embedding_dim: int = setting(
        "vector size; the two tables of one relation must share it", twhin="must equal table 0's", validator=positive
    )
    optimizer: OptimizerConfig = setting("per-table optimizer with sparse row updates", twhin="fused SGD, lr only")
    data_type: DataType = setting(
        "storage dtype of the vectors", twhin="storage dtype (required)", default=DataType.fp32
    )
    pretrained: EmbeddingSnapshot | None = setting("accepted, unused", twhin="unused", default=None)
    vocab: str | None = setting("accepted, unused", twhin="unused", default=None)
    num_partitions: PartitionCount = setting(
        "PBG partitions of this type; all partitioned tables share one P. `auto`: `tbg import` chooses P from"
        " `runtime.memory_budget` and the entity count (docs/memory.md); later commands take it from the graph",
        default=1,
        validator=_partition_count,
        ext=True,
    )
    init_scale: float | None = setting(
        "N(0, init_scale) initialisation, as in PBG",
        default=None,
        validator=[finite, positive],
        ext=True,
        default_doc="none: U(±sqrt(1/num_embeddings)), torchrec's default",
    )


@attrs.define(kw_only=True)
class EmbeddingsConfig:
    """The entity types."""

    tables: list[EmbeddingTableConfig] = setting(
        "one entity type each", twhin="one torchrec table each", validator=non_empty
    )
    tables_to_log: list[str] | None = setting("accepted; the names must be tables", twhin="not passed on", default=None)


@attrs.define(kw_only=True)
class RelationConfig:
    """One edge type; its position in `model.relations` is its relation id."""

    name: str = setting("unique; names-mode sources may give relations by name", validator=non_empty)
    lhs: str = setting("table of the source entities (must exist)", twhin="table name")
    rhs: str = setting("table of the destination entities (must exist)", twhin="table name")
    operator: str = setting(
        "transform applied to the embeddings before comparing (`complex_diagonal` needs an even dim; plugins:"
        " docs/extending.md)",
        twhin="only `translation`, applied to rhs",
        default="translation",
        registry="operator",
    )
    weight: float = setting("loss weight of the relation's edges", default=1.0, validator=[finite, positive], ext=True)


@attrs.define(kw_only=True)
class ModelConfig:
    """Entity tables, relations and how edges are scored."""

    embeddings: EmbeddingsConfig = setting("the entity tables")
    relations: list[RelationConfig] = setting(
        "the edge types; position = relation id", twhin="position = `rel` id", validator=non_empty
    )
    translation_optimizer: OptimizerConfig = setting(
        "trains the relation (operator) parameters", twhin="its only parameter never gets a gradient"
    )
    comparator: str = setting(
        "how an operator-transformed embedding is compared with a candidate",
        twhin="(dot)",
        default="dot",
        registry="comparator",
        ext=True,
    )
    loss: str = setting(
        "`logistic` (negatives labelled 0, weighted to the positives' total), `ranking` (margin), `softmax`",
        twhin="(BCE, negatives wrongly labelled 1)",
        default="logistic",
        registry="loss",
        ext=True,
    )
    margin: float = setting("margin of the `ranking` loss", default=0.1, validator=finite, ext=True)
    relation_sides: RelationSides = setting(
        "`both`: an operator per side, rhs candidates scored by cmp(g_r(lhs), rhs) and lhs candidates by the"
        " reciprocal operator; `rhs`: one operator on the rhs side (PBG standard, TwHIN literal)",
        twhin="(`rhs`)",
        default=RelationSides.both,
        ext=True,
    )

    def table(self, name: str) -> EmbeddingTableConfig:
        return next(t for t in self.embeddings.tables if t.name == name)

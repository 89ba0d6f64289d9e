"""A split section (`train_data`, `validation_data`, `test_data`): its source, batches and negatives."""

from __future__ import annotations

import attrs

from tbg.config.fields import ConfigEnum, FieldProblem, non_empty, non_negative, positive, setting
from tbg.config.optimizers import REFERENCE_BATCH


class InBatchScope(ConfigEnum):
    """Where in-batch negatives come from (``train_data.in_batch_scope``; ``auto``: see
    :meth:`DataConfig.negative_scheme`)."""

    auto = "auto"
    relation = "relation"
    batch = "batch"
    chunk = "chunk"


class GlobalNegativesScope(ConfigEnum):
    """Who shares one draw of the uniform negatives (``train_data.global_negatives_scope``)."""

    batch = "batch"
    chunk = "chunk"


@attrs.define(kw_only=True)
class DataConfig:
    """One split of source edges and how its batches and negatives are drawn.

    `validation_data` is required (as in TwHIN, which never reads it); tbg imports it as the `valid` split and
    reports validation loss on it. `test_data` is optional; `tbg eval` ranks it by default (`eval.split`).
    """

    data_root: str = setting(
        "any fsspec URL or glob; Parquet, TSV or CSV (see `graph`)",
        twhin="Parquet glob (local or `gs://`)",
        validator=non_empty,
    )
    per_replica_batch_size: int = setting(
        "positives per step (per trainer)",
        twhin="positives per rank per step (required)",
        default=1000,
        validator=positive,
    )
    global_negatives: int = setting(
        "G uniform entities of the partition, shared by the batch (or per chunk, see `global_negatives_scope`)",
        twhin="ignored (required)",
        default=0,
        validator=non_negative,
    )
    in_batch_negatives: int = setting(
        "S entities sampled from the batch's edges (see `in_batch_scope`; with `auto` and uniform negatives, any"
        " S > 0 means the whole batch)",
        twhin="S per relation per side (required; 0 crashes)",
        default=0,
        validator=non_negative,
    )
    limit: int | None = setting(
        "read at most this many rows of the source (files in sorted order)",
        twhin="ignored",
        default=None,
        validator=positive,
        default_doc="none: all rows",
    )
    offset: int | None = setting(
        "skip this many rows first",
        twhin="ignored (must be > 0)",
        default=None,
        validator=non_negative,
        default_doc="none: row 0",
    )
    in_batch_scope: InBatchScope = setting(
        "where in-batch negatives come from: `relation`: S edges of each relation in the batch, shared by its"
        " edges (TwHIN); `batch`: S edges of the whole batch, shared by all; `chunk`: PBG's chunks of S edges"
        " whose positives are negatives for one another; `auto`: tbg's best measured scheme, `batch` with every"
        " other positive of the batch (S is raised to the batch size) when the section also draws uniform"
        " negatives (a batch above 1000 edges: chunks of 1000, each its own uniform draw), `relation` (TwHIN's"
        " meaning) when it has in-batch negatives only (docs/training.md)",
        default=InBatchScope.auto,
        default_doc="`auto`: the whole batch as in-batch negatives gave the best filtered MRR of the defaults"
        " study at P=1 and P=4 (docs/benchmarks.md), well above S per relation or PBG's chunks of S, at about"
        " half their edges/s; above 1000 edges the whole batch costs O(B^2) a step, so each chunk of 1000 gets"
        " exactly the negatives of a 1000-edge batch; a config without uniform negatives is TwHIN's scheme, so"
        " it keeps TwHIN's per-relation S",
        ext=True,
    )
    global_negatives_scope: GlobalNegativesScope = setting(
        "who shares one draw of the G uniform samples: the whole batch (TwHIN), or chunks"
        " (needs `in_batch_scope: chunk`)",
        default=GlobalNegativesScope.batch,
        default_doc="`batch`: the scheme `in_batch_scope: auto` picks was measured with one draw per batch (G"
        " sampled rows a step; a draw per chunk costs C·G)",
        ext=True,
    )
    global_negatives_chunks_per_draw: int = setting(
        "with `global_negatives_scope: chunk`, consecutive chunks sharing one draw; 1 = each chunk its own (PBG"
        " exactly, C·G sampled rows a step), k = ⌈C/k⌉ draws a step",
        default=1,
        validator=positive,
        ext=True,
    )

    def negative_scheme(self, relation_free: bool = True) -> tuple[InBatchScope, int]:
        """The in-batch scope and S this section trains with, ``auto`` resolved.

        ``auto``: with uniform negatives (``global_negatives > 0``, which TwHIN's release never draws, so the
        config is not written in TwHIN's scheme) every edge meets every other positive of its batch (``batch``
        scope, S = the batch size), the best scheme measured, up to batches of :data:`REFERENCE_BATCH`; a
        larger batch is cut into chunks of that many (``chunk`` scope, each chunk its own uniform draw: per
        edge the same negatives and cost as at the reference batch), or, where candidates pass through the
        relation (``relation_free`` false: chunk scope cannot score them), S = that many of the batch.  With
        in-batch negatives only it is TwHIN's scheme, S per relation.  ``in_batch_negatives: 0`` keeps
        in-batch negatives off either way.
        """
        if self.in_batch_scope != InBatchScope.auto:
            return self.in_batch_scope, self.in_batch_negatives
        if self.global_negatives == 0:
            return InBatchScope.relation, self.in_batch_negatives
        if self.in_batch_negatives == 0:
            return InBatchScope.batch, 0
        if self.per_replica_batch_size > REFERENCE_BATCH:
            return (InBatchScope.chunk if relation_free else InBatchScope.batch), REFERENCE_BATCH
        return InBatchScope.batch, max(self.in_batch_negatives, self.per_replica_batch_size)

    def uniform_scheme(self, relation_free: bool = True) -> tuple[GlobalNegativesScope, int]:
        """Who shares a uniform draw (``global_negatives_scope``, ``global_negatives_chunks_per_draw``), with
        ``auto``'s chunks of a large batch resolved: each chunk its own draw."""
        if self.negative_scheme(relation_free)[0] == InBatchScope.chunk and self.in_batch_scope == InBatchScope.auto:
            return GlobalNegativesScope.chunk, 1
        return self.global_negatives_scope, self.global_negatives_chunks_per_draw

    def __attrs_post_init__(self) -> None:
        if self.global_negatives_chunks_per_draw > 1 and self.global_negatives_scope != GlobalNegativesScope.chunk:
            raise FieldProblem(
                "global_negatives_chunks_per_draw", "needs global_negatives_scope chunk (batch: one draw for all)"
            )
        if self.global_negatives_scope == GlobalNegativesScope.chunk and self.in_batch_scope != InBatchScope.chunk:
            raise FieldProblem(
                "global_negatives_scope", f"chunk needs in_batch_scope chunk, got {self.in_batch_scope!r}"
            )

"""The whole config: :class:`Config` (TwHIN's top-level keys plus tbg's) and its cross-field rules.

Each section is declared in its own module (``runtime``, ``training``, ``model``, ``optimizers``, ``data``,
``graph``, ``evaluation``), the field machinery in ``fields``.  TwHIN's ``projects/twhin/config/local.yaml`` loads
unchanged.

Deliberate relaxations of TwHIN's rules (documented in docs/config.md):
- tables may differ in ``embedding_dim``/``data_type``; only the two tables of one relation must share a dim;
- ``num_embeddings`` may be omitted in ``names`` id mode (the importer counts the entities);
- ``offset: 0`` is allowed, ``global_negatives``/``in_batch_negatives`` default to 0 (TwHIN requires them);
- ``in_batch_negatives: 0`` is valid (TwHIN divides by zero).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

import attrs

from tbg.config.data import DataConfig, InBatchScope
from tbg.config.evaluation import EvalConfig
from tbg.config.fields import registries, setting
from tbg.config.graph import GraphConfig, IdMode
from tbg.config.model import (
    ModelConfig,
    RelationSides,
)
from tbg.config.runtime import RuntimeConfig
from tbg.config.training import TrainingConfig


@attrs.define(kw_only=True)
class Config:
    """A whole run. The top-level keys are exactly TwHIN's, plus tbg's optional `test_data`, `graph` and `eval`."""

    runtime: RuntimeConfig = setting("device, threads, seed", factory=RuntimeConfig)
    training: TrainingConfig = setting("save dir, run length, logging, checkpoints", factory=TrainingConfig)
    model: ModelConfig = setting("entity tables, relations, scoring")
    train_data: DataConfig = setting("the training split")
    validation_data: DataConfig = setting(
        "the validation split: tbg imports it as `valid` and logs validation loss on it", twhin="never read"
    )
    test_data: DataConfig | None = setting("an optional third split, the one `tbg eval` ranks", default=None, ext=True)
    graph: GraphConfig = setting("where the imported graph lives, how sources are read", factory=GraphConfig, ext=True)
    eval: EvalConfig = setting("how `tbg eval` ranks", factory=EvalConfig, ext=True)

    @property
    def graph_dir(self) -> str:
        if self.graph.dir is not None:
            return self.graph.dir
        return (
            str(PurePosixPath(self.training.save_dir) / "graph")
            if "://" not in self.training.save_dir
            else (self.training.save_dir.rstrip("/") + "/graph")
        )

    def splits(self) -> dict[str, DataConfig]:
        """The data splits the config names, in import order."""
        out = {"train": self.train_data, "valid": self.validation_data}
        if self.test_data is not None:
            out["test"] = self.test_data
        return out

    def to_dict(self) -> dict[str, Any]:
        from tbg.config.loading import converter

        return converter.unstructure(self, Config)

    def fingerprint(self, *sections: str) -> str:
        """A stable hash of the named top-level sections (what an import or checkpoint depends on)."""
        data = self.to_dict()
        chosen = {k: data[k] for k in sections} if sections else data
        return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- cross-field rules


def check_references(cfg: Config) -> list[str]:
    """Cross-field rules: table/relation names, dims, id modes."""
    operators = registries()["operator"]
    problems: list[str] = []
    tables = cfg.model.embeddings.tables
    names = [t.name for t in tables]
    for i, name in enumerate(names):
        if names.index(name) != i:
            problems.append(f"model.embeddings.tables[{i}].name: duplicate table name {name!r}")
        if cfg.graph.id_mode == IdMode.indices and tables[i].num_embeddings is None:
            problems.append(f"model.embeddings.tables[{i}].num_embeddings: required in indices id mode")
    rel_names = [r.name for r in cfg.model.relations]
    by_name = {t.name: t for t in tables}
    for i, rel in enumerate(cfg.model.relations):
        if rel_names.index(rel.name) != i:
            problems.append(f"model.relations[{i}].name: duplicate relation name {rel.name!r}")
        for side in ("lhs", "rhs"):
            table = getattr(rel, side)
            if table not in by_name:
                problems.append(f"model.relations[{i}].{side}: unknown table {table!r} (tables: {', '.join(names)})")
        if rel.lhs in by_name and rel.rhs in by_name:
            dl, dr = by_name[rel.lhs].embedding_dim, by_name[rel.rhs].embedding_dim
            if dl != dr:
                problems.append(
                    f"model.relations[{i}]: tables {rel.lhs!r} (dim {dl}) and {rel.rhs!r} (dim {dr})"
                    " must share embedding_dim"
                )
            problem = operators.resolve(rel.operator).dim_problem(dl)
            if problem:
                problems.append(f"model.relations[{i}].operator: {rel.operator} {problem}")
    for i, name in enumerate(cfg.model.embeddings.tables_to_log or []):
        if name not in by_name:
            problems.append(f"model.embeddings.tables_to_log[{i}]: unknown table {name!r}")
    relation_aware = any(not operators.resolve(r.operator).is_identity for r in cfg.model.relations)
    if cfg.model.relation_sides == RelationSides.rhs and relation_aware:
        for section, data in (("train_data", cfg.train_data), ("validation_data", cfg.validation_data)):
            if data.in_batch_scope == InBatchScope.chunk:
                problems.append(
                    f"{section}.in_batch_scope: chunk scores mixed relations in one product, which needs"
                    " relation-free candidates: use model.relation_sides both, or in_batch_scope relation/batch"
                )
    partitioned = sorted({t.num_partitions for t in tables if t.num_partitions != "auto" and t.num_partitions > 1})
    if cfg.runtime.memory_budget is None:
        for i, t in enumerate(tables):
            if t.num_partitions == "auto":
                problems.append(
                    f"model.embeddings.tables[{i}].num_partitions: auto needs runtime.memory_budget (e.g. 8GiB)"
                )
    if len(partitioned) > 1:
        problems.append(f"model.embeddings.tables: partitioned tables must share one num_partitions, got {partitioned}")
    cols = cfg.graph.columns
    if cols is not None and cols.rel is None and len(cfg.model.relations) != 1:
        problems.append("graph.columns.rel: may only be omitted when the model has exactly one relation")
    return problems

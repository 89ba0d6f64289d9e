"""Does this graph dir / checkpoint fit this config?  One answer for train, resume, warm start, eval and export.

Every refusal is one line that names the config key at fault and the file (graph dir or checkpoint) it
disagrees with, raised as :class:`~tbg.errors.ConsistencyError`; a checkpoint that cannot be read at all is a
:class:`~tbg.errors.CheckpointError`.  numpy/h5py/yaml only: ``tbg export`` must not import torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import attrs
import h5py
import yaml

from tbg.checkpoint import Checkpoint
from tbg.config import Config, OptimizerConfig, TrainOn, converter
from tbg.config.loading import read_yaml
from tbg.errors import CheckpointError, ConsistencyError
from tbg.graph import Graph, PartitionLayout

# ----------------------------------------------------------------------------- graph <-> config


def resolve_partitions(cfg: Config, graph: Graph) -> Config:
    """``cfg`` with every ``num_partitions: auto`` replaced by the P the graph was imported with (the importer
    chose it from ``runtime.memory_budget``); called before a command reads the graph with the config."""
    from tbg.memory import AUTO

    tables = cfg.model.embeddings.tables
    if not any(t.num_partitions == AUTO for t in tables):
        return cfg
    resolved = []
    for t in tables:
        etype = graph.entity_types.get(t.name)
        if t.num_partitions == AUTO and etype is not None:
            t = attrs.evolve(t, num_partitions=etype.num_partitions)
        resolved.append(t)
    embeddings = attrs.evolve(cfg.model.embeddings, tables=resolved)
    return attrs.evolve(cfg, model=attrs.evolve(cfg.model, embeddings=embeddings))


def check_graph(cfg: Config, graph: Graph, growing: bool = False) -> None:
    """The graph holds exactly the config's tables (counts, partitions) and relations (names, types), in order.

    ``growing`` (``tbg import --append``): a table's ``num_embeddings`` may exceed the graph's count (the rows
    the append adds), never fall below it."""
    where = f"graph at {graph.path}"
    tables = cfg.model.embeddings.tables
    for i, table in enumerate(tables):
        etype = graph.entity_types.get(table.name)
        if etype is None:
            have = ", ".join(graph.entity_types)
            raise ConsistencyError(
                f"model.embeddings.tables[{i}].name: {where} has no entity type {table.name!r} (has: {have});"
                " re-run `tbg import`"
            )
        if growing and table.num_embeddings is not None and table.num_embeddings < etype.count:
            raise ConsistencyError(
                f"model.embeddings.tables[{i}].num_embeddings: {table.num_embeddings} but the {where} already has"
                f" {etype.count} {table.name!r} entities; an append only adds entities"
            )
        if not growing and table.num_embeddings is not None and table.num_embeddings != etype.count:
            raise ConsistencyError(
                f"model.embeddings.tables[{i}].num_embeddings: {table.num_embeddings} but the {where} has"
                f" {etype.count} {table.name!r} entities"
            )
        if table.num_partitions != etype.num_partitions:
            raise ConsistencyError(
                f"model.embeddings.tables[{i}].num_partitions: {table.num_partitions} but the {where} was imported"
                f" with {etype.num_partitions}; re-run `tbg import`"
            )
    extra = set(graph.entity_types) - {t.name for t in tables}
    if extra:
        raise ConsistencyError(f"model.embeddings.tables: {where} has entity types not in the config: {sorted(extra)}")
    rels = cfg.model.relations
    if len(rels) != len(graph.relations):
        raise ConsistencyError(
            f"model.relations: the config has {len(rels)} relations, the {where} {len(graph.relations)};"
            " re-run `tbg import`"
        )
    for i, (rel, grel) in enumerate(zip(rels, graph.relations)):
        if (rel.name, rel.lhs, rel.rhs) != (grel.name, grel.lhs, grel.rhs):
            raise ConsistencyError(
                f"model.relations[{i}]: {rel.name} ({rel.lhs}->{rel.rhs}) but the {where} has"
                f" {grel.name} ({grel.lhs}->{grel.rhs}) at this position; re-run `tbg import`"
            )


def check_trainable(cfg: Config, graph: Graph) -> None:
    """:func:`check_graph`, and the graph has training edges (with ``training.train_on: appended``: appended ones)."""
    check_graph(cfg, graph)
    if "train" not in graph.splits or graph.num_edges("train") == 0:
        raise ConsistencyError(f"train_data: the graph at {graph.path} has no training edges")
    if cfg.training.train_on == TrainOn.appended:
        entries = graph.lineage
        if len(entries) == 1:
            raise ConsistencyError(
                f"training.train_on: appended, but the graph at {graph.path} was never grown by"
                " `tbg import --append`; use `all`"
            )
        if int(entries[-1].get("splits", {}).get("train", {}).get("num_edges", 0)) == 0:
            raise ConsistencyError(
                f"training.train_on: appended, but the latest append to the graph at {graph.path} added no training"
                " edges; use `all`"
            )


# ----------------------------------------------------------------------------- checkpoint <-> config, graph


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


def check_checkpoint(
    cfg: Config, graph: Graph, ckpt: Checkpoint, fix: str = "", warm_start: bool = False
) -> dict[str, int] | None:
    """The checkpoint was trained on this import of the graph and with the config's model.

    Compares the model section of the checkpoint's config.yaml key by key (tables, dims, partitions,
    relations with operators, comparator, relation_sides), then the model fingerprint in progress.json;
    ``fix`` (what the user can do about it) ends every message.  A checkpoint of an earlier state of a graph
    grown by ``tbg import --append`` fits only a ``warm_start``: then the entity counts it was trained with are
    returned (its shards hold those rows), else None.
    """
    suffix = f"; {fix}" if fix else ""
    where = ckpt.path
    counts = None
    recorded = ckpt.progress.get("graph_import_id")
    if recorded is not None and graph.import_id is not None and recorded != graph.import_id:
        ids = [entry.get("import_id") for entry in graph.lineage]
        if recorded not in ids[:-1]:
            raise ConsistencyError(
                f"{where}: trained on graph import {recorded}, but {graph.path} now holds import {graph.import_id}"
                " (re-imported: entity ids may differ); retrain, or point graph.dir at the original import"
            )
        entry = graph.lineage[ids.index(recorded)]
        counts = {name: int(c) for name, c in entry["entity_counts"].items()}
        if not warm_start:
            grown = sum(t.count for t in graph.entity_types.values()) - sum(counts.values())
            raise ConsistencyError(
                f"{where}: trained on graph import {recorded}, before {graph.path} grew (`tbg import --append`:"
                f" {len(ids) - 1 - ids.index(recorded)} append(s), +{grown:,} entities); such a checkpoint can warm"
                " start a run on the grown graph (training.initial_checkpoint_dir, into a new training.save_dir)"
                " but cannot be resumed, evaluated or read with it"
            )
    model = _checkpoint_model(ckpt)
    if model is not None:
        _check_model(cfg, model, f"the checkpoint {where}", suffix)
    got = ckpt.progress.get("model_fingerprint")
    if got is not None and got != model_fingerprint(cfg):
        raise ConsistencyError(
            f"model: the checkpoint {where} was trained with a different model"
            f" (tables/relations/operators/comparator/data types){suffix}"
        )
    return counts


def check_optimizers(cfg: Config, ckpt: Checkpoint, allow_change: bool = False) -> list[str]:
    """Resume: every optimizer (kind, hyperparameters, learning-rate schedule) is the one the checkpoint was
    trained with, since its saved state belongs to it.  A change is an error naming the key unless
    ``allow_change`` (``tbg train --allow-optimizer-change``); then the changed keys are returned.
    """
    model = _checkpoint_model(ckpt)
    if model is None:
        return []
    recorded = {t.get("name"): t.get("optimizer") for t in model.get("embeddings", {}).get("tables", [])}
    ours = [(f"model.embeddings.tables[{i}].optimizer", t.optimizer, recorded.get(t.name))
            for i, t in enumerate(cfg.model.embeddings.tables)]  # fmt: skip
    ours.append(("model.translation_optimizer", cfg.model.translation_optimizer, model.get("translation_optimizer")))
    changed = []
    for key, optimizer, theirs in ours:
        if theirs is None:  # a checkpoint that did not record it
            continue
        try:
            same = converter.structure(theirs, OptimizerConfig) == optimizer
        except Exception:  # noqa: BLE001 - an optimizer this tbg cannot read is not the configured one
            same = False
        if same:
            continue
        if not allow_change:
            raise ConsistencyError(
                f"{key}: {_describe(converter.unstructure(optimizer))} but the checkpoint {ckpt.path} was trained"
                f" with {_describe(theirs)}; pass `tbg train --allow-optimizer-change` to resume with the new one"
            )
        changed.append(key)
    return changed


def _describe(optimizer: Any) -> str:
    """An optimizer block as compact one-line YAML, unset keys left out."""

    def drop_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop_none(v) for k, v in value.items() if v is not None}
        return value

    return yaml.safe_dump(drop_none(optimizer), default_flow_style=True, width=10**6).strip()


def check_shards(cfg: Config, graph: Graph, ckpt: Checkpoint, counts: dict[str, int] | None = None) -> None:
    """Every partition of every table has an embedding shard of the shape the graph and config need
    (``counts``: the entity counts of the earlier graph a warm-start checkpoint was trained on)."""
    for t in cfg.model.embeddings.tables:
        et = graph.entity_types[t.name]
        if counts is not None:
            et = PartitionLayout(counts.get(t.name, et.count), et.num_partitions)
        for p in range(et.num_partitions):
            path = ckpt.embedding_path(t.name, p)
            if not os.path.isfile(path):
                raise CheckpointError(f"{ckpt.path}: no embeddings for {t.name!r} partition {p}")
            try:
                with h5py.File(path, "r") as f:
                    shape = tuple(f["embeddings"].shape)
            except (OSError, KeyError) as exc:
                raise CheckpointError(f"{path}: unreadable embedding shard: {exc}") from None
            check_shard(path, shape, (et.partition_size(p), t.embedding_dim))


def check_shard(path: str, shape: tuple[int, ...], want: tuple[int, int]) -> None:
    """One embedding shard has the (rows, embedding_dim) that its partition and table need."""
    if tuple(shape) != tuple(want):
        raise ConsistencyError(f"{path}: shard shape {tuple(shape)}, the graph and config need {tuple(want)}")


def _checkpoint_model(ckpt: Checkpoint) -> dict[str, Any] | None:
    """The model section of the checkpoint's config.yaml (None for checkpoints without one)."""
    try:
        data = read_yaml(ckpt.config_text())
    except FileNotFoundError:
        return None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise CheckpointError(f"{ckpt.path}/config.yaml: unreadable: {problem}") from None
    model = (data or {}).get("model") if isinstance(data, dict) else None
    if model is None:
        return None
    _shape(ckpt, model, "model", dict)
    _shape(ckpt, model.get("embeddings", {}), "model.embeddings", dict)
    for key, value in (("model.embeddings.tables", model.get("embeddings", {}).get("tables", [])),
                       ("model.relations", model.get("relations", []))):  # fmt: skip
        for i, item in enumerate(_shape(ckpt, value, key, list)):
            _shape(ckpt, item, f"{key}[{i}]", dict)
    for i, t in enumerate(model.get("embeddings", {}).get("tables", [])):
        for field in ("embedding_dim", "num_partitions"):
            if field in t:
                _shape(ckpt, t[field], f"model.embeddings.tables[{i}].{field}", int)
    return model


def _shape(ckpt: Checkpoint, value: Any, key: str, kind: type) -> Any:
    """The checkpoint's recorded config holds a ``kind`` at ``key`` (else it is damaged: CheckpointError)."""
    if not isinstance(value, kind) or isinstance(value, bool):
        what = {dict: "a mapping", list: "a list", int: "an integer"}[kind]
        raise CheckpointError(f"{ckpt.path}/config.yaml: {key}: expected {what}, got {value!r:.40}")
    return value


def _check_model(cfg: Config, model: dict[str, Any], where: str, suffix: str) -> None:
    tables = {t.get("name"): t for t in model.get("embeddings", {}).get("tables", [])}
    for i, t in enumerate(cfg.model.embeddings.tables):
        key = f"model.embeddings.tables[{i}]"
        theirs = tables.get(t.name)
        if theirs is None:
            have = ", ".join(map(str, tables))
            raise ConsistencyError(f"{key}.name: {where} was trained without table {t.name!r} (has: {have}){suffix}")
        for field, default in (("embedding_dim", -1), ("num_partitions", 1)):
            ours, them = getattr(t, field), theirs.get(field, default)
            if int(them) != ours:
                raise ConsistencyError(f"{key}.{field}: {ours} but {where} was trained with {them}{suffix}")
    theirs_rels = model.get("relations", [])
    rels = cfg.model.relations
    if len(theirs_rels) != len(rels):
        raise ConsistencyError(
            f"model.relations: the config has {len(rels)} relations, {where} was trained with {len(theirs_rels)}"
            f"{suffix}"
        )
    for i, (r, theirs) in enumerate(zip(rels, theirs_rels)):
        them = (theirs.get("name"), theirs.get("lhs"), theirs.get("rhs"), str(theirs.get("operator", "translation")))
        if (r.name, r.lhs, r.rhs, str(r.operator)) != them:
            raise ConsistencyError(
                f"model.relations[{i}]: {r.name} ({r.lhs}->{r.rhs}, {r.operator}) but {where} was trained with"
                f" {them[0]} ({them[1]}->{them[2]}, {them[3]}){suffix}"
            )
    for field, default in (("comparator", "dot"), ("relation_sides", "both")):
        them, ours = str(model.get(field, default)), str(getattr(cfg.model, field))
        if them != ours:
            raise ConsistencyError(f"model.{field}: {ours!r} but {where} was trained with {them!r}{suffix}")

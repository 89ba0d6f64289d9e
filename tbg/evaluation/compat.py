"""Checks that a config, a graph dir and a checkpoint describe the same model (numpy/h5py only).

Shared by ``tbg eval`` and ``tbg export`` so that a mismatch is one clear line instead of a shape error
deep inside a matrix product.
"""

from __future__ import annotations

import os

import h5py
import yaml

from tbg.checkpoint import Checkpoint, CheckpointStore, open_checkpoint
from tbg.config import Config
from tbg.errors import CheckpointError
from tbg.graph import Graph, GraphError


def resolve_checkpoint(cfg: Config, path: str | None) -> Checkpoint:
    """``--checkpoint PATH`` (save_dir, checkpoints dir or version dir), else the config's latest version."""
    if path is not None:
        if not os.path.isdir(path):
            raise CheckpointError(f"{path}: checkpoint not found")
        return open_checkpoint(path)
    return CheckpointStore(cfg.training.save_dir).require_latest()


def check_graph(cfg: Config, graph: Graph) -> None:
    """The graph must have the config's tables (counts, partitions) and relations (names, types), in order."""
    for table in cfg.model.embeddings.tables:
        et = graph.entity_types.get(table.name)
        if et is None:
            raise GraphError(f"{graph.path}: entity type {table.name!r} of the config is not in the graph")
        if et.num_partitions != table.num_partitions:
            raise GraphError(
                f"{graph.path}: {table.name!r} has {et.num_partitions} partitions, the config {table.num_partitions}"
            )
        if table.num_embeddings is not None and table.num_embeddings != et.count:
            raise GraphError(f"{graph.path}: {table.name!r} has {et.count} entities, config {table.num_embeddings}")
    got = [(r.name, r.lhs, r.rhs) for r in graph.relations]
    want = [(r.name, r.lhs, r.rhs) for r in cfg.model.relations]
    if got != want:
        raise GraphError(f"{graph.path}: relations {got} differ from the config's {want}")


def _checkpoint_model(ckpt: Checkpoint) -> dict | None:
    try:
        data = yaml.safe_load(ckpt.config_text())
    except FileNotFoundError:
        return None
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{ckpt.path}/config.yaml: unreadable: {exc}") from None
    return (data or {}).get("model") if isinstance(data, dict) else None


def check_checkpoint(cfg: Config, graph: Graph, ckpt: Checkpoint) -> None:
    """Tables, dims, partitions, relations and comparator of the checkpoint's config, then every shard shape."""
    where = ckpt.path
    graph.check_import_id(ckpt.progress.get("graph_import_id"), where)
    model = _checkpoint_model(ckpt)
    if model is not None:
        tables = {t.get("name"): t for t in model.get("embeddings", {}).get("tables", [])}
        for t in cfg.model.embeddings.tables:
            theirs = tables.get(t.name)
            if theirs is None:
                raise CheckpointError(f"{where}: trained without table {t.name!r} (has: {', '.join(map(str, tables))})")
            if int(theirs.get("embedding_dim", -1)) != t.embedding_dim:
                raise CheckpointError(
                    f"{where}: table {t.name!r} has embedding_dim {theirs.get('embedding_dim')},"
                    f" config {t.embedding_dim}"
                )
            if int(theirs.get("num_partitions", 1)) != t.num_partitions:
                raise CheckpointError(
                    f"{where}: table {t.name!r} has {theirs.get('num_partitions', 1)} partitions,"
                    f" config {t.num_partitions}"
                )
        rels = [
            (r.get("name"), r.get("lhs"), r.get("rhs"), r.get("operator", "translation"))
            for r in model.get("relations", [])
        ]
        want = [(r.name, r.lhs, r.rhs, str(r.operator)) for r in cfg.model.relations]
        if rels != want:
            raise CheckpointError(f"{where}: relations {rels} differ from the config's {want}")
        for key, default in (("comparator", "dot"), ("relation_sides", "both")):
            theirs_v, ours = str(model.get(key, default)), str(getattr(cfg.model, key))
            if theirs_v != ours:
                raise CheckpointError(f"{where}: trained with model.{key} {theirs_v!r}, config says {ours!r}")
    for t in cfg.model.embeddings.tables:
        et = graph.entity_types[t.name]
        for p in range(et.num_partitions):
            path = ckpt.embedding_path(t.name, p)
            if not os.path.isfile(path):
                raise CheckpointError(f"{where}: no embeddings for {t.name!r} partition {p}")
            try:
                with h5py.File(path, "r") as f:
                    shape = tuple(f["embeddings"].shape)
            except (OSError, KeyError) as exc:
                raise CheckpointError(f"{path}: unreadable embedding shard: {exc}") from None
            want_shape = (et.partition_size(p), t.embedding_dim)
            if shape != want_shape:
                raise CheckpointError(f"{path}: shape {shape}, expected {want_shape} from the graph and config")

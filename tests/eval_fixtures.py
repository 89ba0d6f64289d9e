"""Builders for small graph dirs and checkpoints used by the eval/export tests (no importer needed)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from tbg.checkpoint import CheckpointStore
from tbg.config import Config, dump_config, parse_config
from tbg.graph import EdgeArrays, GraphWriter, PartitionLayout
from tbg.model.scoring import RelationModel


def make_config(
    save_dir: str,
    types: dict[str, tuple[int, int, int]],
    relations: list[tuple[str, str, str, str]],
    comparator: str = "dot",
    sides: str = "both",
    **eval_kw: Any,
) -> Config:
    """types: name -> (count, dim, partitions); relations: (name, lhs, rhs, operator)."""
    opt = {"adagrad": {"lr": 0.1}}
    data = {
        "training": {"save_dir": save_dir},
        "model": {
            "embeddings": {
                "tables": [
                    {"name": n, "num_embeddings": c, "embedding_dim": d, "num_partitions": p, "optimizer": opt}
                    for n, (c, d, p) in types.items()
                ]
            },
            "relations": [{"name": n, "lhs": lt, "rhs": rt, "operator": op} for n, lt, rt, op in relations],
            "translation_optimizer": opt,
            "comparator": comparator,
            "relation_sides": sides,
        },
        "train_data": {"data_root": "unused"},
        "validation_data": {"data_root": "unused"},
        "graph": {"dir": os.path.join(save_dir, "graph")},
        "eval": eval_kw,
    }
    return parse_config(data)


def write_graph(
    cfg: Config, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], seed: int = 0, names: bool = True
) -> dict[str, np.ndarray]:
    """Graph dir from dense-id edges (lhs, rhs, rel) per split; returns each type's perm."""
    rng = np.random.default_rng(seed)
    writer = GraphWriter(cfg.graph_dir)
    tables = {t.name: t for t in cfg.model.embeddings.tables}
    perms, positions = {}, {}
    for name, t in tables.items():
        perm = rng.permutation(t.num_embeddings).astype(np.int64)
        labels = np.array([f"{name}/é{i}" for i in range(len(perm))], dtype=object) if names else None
        positions[name] = writer.write_entities(name, perm, t.num_partitions, labels)
        perms[name] = perm
    manifest_splits = {}
    rels = cfg.model.relations
    for split, (lhs, rhs, rel) in splits.items():
        lpos = np.empty(len(rel), np.int64)
        rpos = np.empty(len(rel), np.int64)
        lpart = np.empty(len(rel), np.int64)
        rpart = np.empty(len(rel), np.int64)
        for r, spec in enumerate(rels):
            m = rel == r
            for side, ids, pos_out, part_out in (("lhs", lhs, lpos, lpart), ("rhs", rhs, rpos, rpart)):
                t = tables[getattr(spec, side)]
                layout = PartitionLayout(t.num_embeddings, t.num_partitions)
                part_out[m], pos_out[m] = layout.locate(positions[t.name][ids[m]])
        buckets = {}
        for i, j in sorted(set(zip(lpart.tolist(), rpart.tolist()))):
            m = (lpart == i) & (rpart == j)
            writer.write_bucket(
                split, i, j, EdgeArrays(lpos[m].astype(np.int32), rpos[m].astype(np.int32), rel[m].astype(np.int32))
            )
            buckets[f"{i}_{j}"] = int(m.sum())
        manifest_splits[split] = {"num_edges": len(rel), "buckets": buckets, "has_weight": False}
    writer.write_manifest(
        "names" if names else "indices",
        {n: (t.num_embeddings, t.num_partitions) for n, t in tables.items()},
        [(r.name, r.lhs, r.rhs) for r in rels],
        manifest_splits,
    )
    return perms


def write_checkpoint(
    cfg: Config, perms: dict[str, np.ndarray], dense: dict[str, np.ndarray], model: RelationModel, version: int = 1
) -> str:
    """Commit one checkpoint version holding ``dense[type]`` (rows by dense id) split into partitions."""
    store = CheckpointStore(cfg.training.save_dir)
    w = store.begin(version)
    for t in cfg.model.embeddings.tables:
        b = PartitionLayout(t.num_embeddings, t.num_partitions).bounds
        for p in range(t.num_partitions):
            w.write_embeddings(t.name, p, dense[t.name][perms[t.name][b[p] : b[p + 1]]].astype(np.float32))
    w.write_relations({k: v.detach().numpy() for k, v in model.state_dict().items()})
    w.write_file("config.yaml", dump_config(cfg))
    return w.commit({"step": 7})


def integer_model(cfg: Config, seed: int, low: int = -2, high: int = 3) -> RelationModel:
    """A RelationModel whose parameters are small integers, so every score is exact in fp32."""
    gen = torch.Generator().manual_seed(seed)
    model = RelationModel.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(low, high, p.shape, generator=gen).float())
    return model

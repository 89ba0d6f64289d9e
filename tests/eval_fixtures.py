"""Builders for small graph dirs and checkpoints used by the eval/export tests (no importer needed)."""

from __future__ import annotations

import json
import os
from typing import Any

import h5py
import numpy as np
import torch

from tbg.checkpoint import CheckpointStore
from tbg.config import Config, dump_config, parse_config
from tbg.graph import EdgeArrays, partition_bounds, write_bucket
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
    root = cfg.graph_dir
    os.makedirs(os.path.join(root, "entities"), exist_ok=True)
    tables = {t.name: t for t in cfg.model.embeddings.tables}
    perms = {}
    for name, t in tables.items():
        perm = rng.permutation(t.num_embeddings).astype(np.int64)
        position = np.empty_like(perm)
        position[perm] = np.arange(len(perm))
        perms[name] = perm
        with h5py.File(os.path.join(root, "entities", f"{name}.h5"), "w") as f:
            f.create_dataset("perm", data=perm)
            f.create_dataset("position", data=position)
            if names:
                f.create_dataset(
                    "names",
                    data=np.array([f"{name}/é{i}" for i in range(len(perm))], dtype=object),
                    dtype=h5py.string_dtype(),
                )
    manifest_splits = {}
    rels = cfg.model.relations
    for split, (lhs, rhs, rel) in splits.items():
        os.makedirs(os.path.join(root, split), exist_ok=True)
        lpos = np.empty(len(rel), np.int64)
        rpos = np.empty(len(rel), np.int64)
        lpart = np.empty(len(rel), np.int64)
        rpart = np.empty(len(rel), np.int64)
        for r, spec in enumerate(rels):
            m = rel == r
            for side, ids, pos_out, part_out in (("lhs", lhs, lpos, lpart), ("rhs", rhs, rpos, rpart)):
                t = tables[getattr(spec, side)]
                b = partition_bounds(t.num_embeddings, t.num_partitions)
                inv = np.empty(t.num_embeddings, np.int64)
                inv[perms[t.name]] = np.arange(t.num_embeddings)
                pos = inv[ids[m]]
                part = np.searchsorted(b, pos, side="right") - 1
                pos_out[m], part_out[m] = pos - b[part], part
        buckets = {}
        for i, j in sorted(set(zip(lpart.tolist(), rpart.tolist()))):
            m = (lpart == i) & (rpart == j)
            write_bucket(
                os.path.join(root, split, f"edges_{i}_{j}.h5"),
                EdgeArrays(lpos[m].astype(np.int32), rpos[m].astype(np.int32), rel[m].astype(np.int32)),
            )
            buckets[f"{i}_{j}"] = int(m.sum())
        manifest_splits[split] = {"num_edges": len(rel), "buckets": buckets, "has_weight": False}
    manifest = {
        "format_version": 1,
        "id_mode": "names" if names else "indices",
        "entity_types": {n: {"count": t.num_embeddings, "num_partitions": t.num_partitions} for n, t in tables.items()},
        "relations": [{"name": r.name, "lhs": r.lhs, "rhs": r.rhs} for r in rels],
        "splits": manifest_splits,
    }
    with open(os.path.join(root, "manifest.json"), "w") as fh:
        json.dump(manifest, fh)
    return perms


def write_checkpoint(
    cfg: Config, perms: dict[str, np.ndarray], dense: dict[str, np.ndarray], model: RelationModel, version: int = 1
) -> str:
    """Commit one checkpoint version holding ``dense[type]`` (rows by dense id) split into partitions."""
    store = CheckpointStore(cfg.training.save_dir)
    w = store.begin(version)
    for t in cfg.model.embeddings.tables:
        b = partition_bounds(t.num_embeddings, t.num_partitions)
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

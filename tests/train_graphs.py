"""Test helper: build small graph dirs (the importer's format) and configs without the importer."""

from __future__ import annotations

from typing import Any

import numpy as np

from tbg.config import Config, parse_config
from tbg.graph import EdgeArrays, GraphWriter, PartitionLayout


def write_graph(
    path: str,
    types: dict[str, tuple[int, int]],
    relations: list[tuple[str, str, str]],
    splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    seed: int = 0,
    weights: dict[str, np.ndarray] | None = None,
) -> None:
    """types: name -> (count, partitions); splits: name -> (lhs ids, rel ids, rhs ids), dense ids."""
    rng = np.random.default_rng(seed)
    writer = GraphWriter(path)
    position = {}
    for name, (count, parts) in types.items():
        position[name] = writer.write_entities(name, rng.permutation(count).astype(np.int64), parts)
    split_info: dict[str, Any] = {}
    for split, (lhs, rel, rhs) in splits.items():
        lt = np.array([relations[r][1] for r in rel])
        rt = np.array([relations[r][2] for r in rel])
        lp, lo, rp, ro = (np.zeros(len(rel), np.int64) for _ in range(4))
        for name, (count, parts) in types.items():
            layout = PartitionLayout(count, parts)
            for side_t, ids, part, off in ((lt, lhs, lp, lo), (rt, rhs, rp, ro)):
                m = side_t == name
                part[m], off[m] = layout.locate(position[name][ids[m]])
        buckets = {}
        w_all = None if weights is None else weights.get(split)
        for i in np.unique(lp):
            for j in np.unique(rp):
                m = np.nonzero((lp == i) & (rp == j))[0]
                if len(m) == 0:
                    continue
                m = rng.permutation(m)
                w = None if w_all is None else w_all[m].astype(np.float32)
                edges = EdgeArrays(lo[m].astype(np.int32), ro[m].astype(np.int32), rel[m].astype(np.int32), w)
                writer.write_bucket(split, int(i), int(j), edges)
                buckets[f"{i}_{j}"] = len(m)
        split_info[split] = {"num_edges": int(len(rel)), "buckets": buckets, "has_weight": w_all is not None}
    writer.write_manifest("indices", types, relations, split_info)


def planted(n: int = 400, clusters: int = 8, num_rel: int = 3, edges: int = 6000, seed: int = 0, shift: int = 0):
    """Entities in clusters; relation r links cluster c to cluster (c + r + 1) % clusters."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, clusters, n)
    members = [np.nonzero(cluster == c)[0] for c in range(clusters)]
    lhs = rng.integers(0, n, edges)
    rel = rng.integers(0, num_rel, edges)
    target = (cluster[lhs] + shift * (rel + 1)) % clusters
    rhs = np.array([members[t][rng.integers(0, len(members[t]))] for t in target])
    return lhs, rel, rhs, cluster


def make_config(save_dir: str, graph_dir: str, **over: Any) -> Config:
    """A small single-type config; ``over`` patches dotted keys, e.g. ``{"model.loss": "softmax"}``."""
    parts = over.pop("partitions", 1)
    num_rel = over.pop("num_rel", 3)
    n = over.pop("n", 400)
    data: dict[str, Any] = {
        "runtime": {"seed": 0, "num_threads": 1},
        "training": {
            "save_dir": save_dir, "num_train_steps": 100000, "num_epochs": 4, "checkpoint_every_n": 100000,
            "train_log_every_n": 10, "eval_log_every_n": 100000, "num_eval_steps": 2,
        },
        "model": {
            "translation_optimizer": {"adagrad": {"lr": 0.1}},
            "embeddings": {"tables": [{"name": "node", "num_embeddings": n, "embedding_dim": 16,
                                        "num_partitions": parts, "optimizer": {"adagrad": {"lr": 0.1}}}]},
            "relations": [{"name": f"r{i}", "lhs": "node", "rhs": "node", "operator": "translation"}
                          for i in range(num_rel)],
            "comparator": "dot", "loss": "softmax",
        },
        "train_data": {"data_root": "unused", "per_replica_batch_size": 100, "in_batch_negatives": 100,
                       "global_negatives": 50},
        "validation_data": {"data_root": "unused", "per_replica_batch_size": 100, "in_batch_negatives": 100,
                            "global_negatives": 50},
        "graph": {"dir": graph_dir},
    }  # fmt: skip
    for dotted, value in over.items():
        node = data
        keys = dotted.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return parse_config(data)


def planted_graph(path: str, partitions: int = 1, seed: int = 0, n: int = 400, num_rel: int = 3, edges: int = 6000):
    lhs, rel, rhs, cluster = planted(n=n, num_rel=num_rel, edges=edges + 400, seed=seed)
    splits = {
        "train": (lhs[:edges], rel[:edges], rhs[:edges]),
        "valid": (lhs[edges : edges + 200], rel[edges : edges + 200], rhs[edges : edges + 200]),
        "test": (lhs[edges + 200 :], rel[edges + 200 :], rhs[edges + 200 :]),
    }
    relations = [(f"r{i}", "node", "node") for i in range(num_rel)]
    write_graph(path, {"node": (n, partitions)}, relations, splits, seed=seed)
    return splits, cluster


def full_table(ckpt_dir: str, graph_dir: str, etype: str = "node"):
    """Embeddings of every entity by dense id, assembled from a checkpoint's partition shards."""
    import torch

    from tbg.checkpoint import open_checkpoint
    from tbg.graph import Graph

    ckpt, graph = open_checkpoint(ckpt_dir), Graph(graph_dir)
    t = graph.entity_types[etype]
    out = np.zeros((t.count, ckpt.embeddings(etype, 0).shape[1]), np.float32)
    for p in range(t.num_partitions):
        out[graph.partition_ids(etype, p)] = ckpt.embeddings(etype, p)
    return torch.from_numpy(out), ckpt


def rank_quality(cfg: Config, split: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, float]:
    """Unfiltered rhs-ranking MRR and AUC of held-out edges against all entities (fp32)."""
    import torch

    from tbg.model.scoring import RelationModel

    emb, ckpt = full_table(cfg.training.save_dir, cfg.graph_dir)
    model = RelationModel.from_config(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in ckpt.relations().items()})
    lhs, rel, rhs = (torch.from_numpy(a).long() for a in split)
    rr, auc = [], []
    with torch.no_grad():
        for r in torch.unique(rel).tolist():
            m = rel == r
            scores = model.score_candidates("rhs", emb[lhs[m]], r, emb)
            true = scores.gather(1, rhs[m].unsqueeze(1))
            higher = (scores > true).sum(1).float()
            rr.append(1.0 / (1.0 + higher))
            auc.append(1.0 - higher / (emb.shape[0] - 1))
    return {"mrr": float(torch.cat(rr).mean()), "auc": float(torch.cat(auc).mean())}

"""Reading results back for assertions: a graph dir's edge multiset, a checkpoint's full table, rank quality."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tbg.config import Config
from tbg.graph import Graph


def graph_multiset(g: Graph, split: str, names: bool = False) -> Counter:
    """Rebuild (lhs, rel, rhs, weight) from the buckets and entity mapping: the round-trip proof."""
    out: Counter = Counter()
    for i, j in g.buckets(split):
        e = g.read_bucket(split, i, j)
        assert len(e) == g.bucket_count(split, i, j)
        for r, rel in enumerate(g.relations):
            m = e.rel == r
            if not m.any():
                continue
            lt, rt = g.entity_types[rel.lhs], g.entity_types[rel.rhs]
            li = 0 if lt.num_partitions == 1 else i
            rj = 0 if rt.num_partitions == 1 else j
            assert (e.lhs[m] < lt.partition_size(li)).all() and (e.rhs[m] < rt.partition_size(rj)).all()
            lhs = g.partition_ids(rel.lhs, li)[e.lhs[m]]
            rhs = g.partition_ids(rel.rhs, rj)[e.rhs[m]]
            if names:
                lhs, rhs = g.names(rel.lhs, lhs), g.names(rel.rhs, rhs)
            w = e.weight[m] if e.weight is not None else [None] * int(m.sum())
            out.update(zip(lhs.tolist(), [r] * len(lhs), rhs.tolist(), [None if x is None else float(x) for x in w]))
    return out


def source_multiset(lhs, rel, rhs, weight=None) -> Counter:  # noqa: ANN001
    """The same multiset from the source columns."""
    w = [None] * len(lhs) if weight is None else [float(np.float32(x)) for x in weight]
    return Counter(zip(list(lhs), [int(x) for x in rel], list(rhs), w))


def full_table(ckpt_dir: str, graph_dir: str, etype: str = "node"):  # noqa: ANN201
    """Embeddings of every entity by dense id, assembled from a checkpoint's partition shards."""
    import torch

    from tbg.checkpoint import open_checkpoint

    ckpt, graph = open_checkpoint(ckpt_dir), Graph(graph_dir)
    t = graph.entity_types[etype]
    out = np.zeros((t.count, ckpt.embeddings(etype, 0).shape[1]), np.float32)
    for p in range(t.num_partitions):
        out[graph.partition_ids(etype, p)] = ckpt.embeddings(etype, p)
    return torch.from_numpy(out), ckpt


def rank_quality(cfg: Config, split: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, float]:
    """Unfiltered rhs-ranking MRR and AUC of held-out ``(lhs, rel, rhs)`` edges against all entities (fp32)."""
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

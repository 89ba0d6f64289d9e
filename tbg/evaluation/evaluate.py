"""The evaluation driver: one call from tables + relation model to a metrics dict.

``evaluate_model`` works from any embedding source (a checkpoint, or the trainer's in-memory tables), so
``tbg eval`` and periodic validation during training share one code path.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tbg.config import Config
from tbg.errors import ConfigError
from tbg.evaluation.engine import EmbeddingSource, TableCache, rank_all_sides, rank_sampled
from tbg.evaluation.eval_edges import CandidateSet, EvalEdges, TypeLayout, load_split
from tbg.evaluation.filter import build_filters
from tbg.evaluation.ranking import summarize
from tbg.graph import Graph
from tbg.model.scoring import RelationModel

DEFAULT_CACHE_BYTES = 4 << 30

# eval.candidates -> what the JSON's protocol.candidate_set says about it (docs/evaluation.md: when each is right)
CANDIDATE_SETS = {
    "all": "every declared entity of the target type (indices mode: ids no edge mentions included)",
    "seen": "entities of the target type that occur in an edge of any imported split (PBG, PyKEEN, OGB)",
    "sampled": "per-chunk sample: the chunk's truths plus uniform draws from the truth's partition",
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate_model(
    cfg: Config,
    graph: Graph,
    embeddings: EmbeddingSource,
    relation_model: RelationModel,
    split: str = "test",
    *,
    candidates: str | None = None,
    filtered: bool | None = None,
    filter_splits: Sequence[str] | None = None,
    max_edges: int | None = None,
    device: str | torch.device | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    edges: EvalEdges | None = None,
) -> dict[str, Any]:
    """Rank both sides of every edge of ``split`` and return metrics, protocol and counts (JSON-ready).

    ``embeddings(etype, part)`` returns that partition's table [rows, dim]; it is called at most once per
    partition while the cache holds it.  ``candidates``/``filtered`` default to ``cfg.eval``; ``filter_splits``
    defaults to every split of the graph (pass ``("train", "valid")`` during training so test never leaks).
    ``max_edges`` evaluates the first edges of the split only.
    """
    t0 = time.perf_counter()
    ev = cfg.eval
    mode = str(candidates or ev.candidates)
    if mode not in CANDIDATE_SETS:
        raise ConfigError(f"eval candidates must be one of {', '.join(CANDIDATE_SETS)}, got {mode!r}")
    do_filter = ev.filtered if filtered is None else filtered
    dev = resolve_device(cfg.runtime.device) if device is None else torch.device(device)
    if edges is None:
        edges = load_split(graph, split, max_edges)
    layout = TypeLayout(graph)
    used_splits = [s for s in (filter_splits or graph.splits) if s in graph.splits] if do_filter else []
    filters = build_filters(graph, edges, used_splits) if do_filter else {"lhs": None, "rhs": None}
    t_filter = time.perf_counter() - t0

    first = next(relation_model.parameters(), None)
    if first is not None and first.device != dev:  # never move the caller's (e.g. the trainer's) module
        relation_model = copy.deepcopy(relation_model).to(dev)
    cache = TableCache(embeddings, relation_model, dev, cache_bytes)
    workers = torch.get_num_threads() if dev.type == "cpu" else 1
    if mode == "sampled":
        cset = None
    else:
        cset = CandidateSet.seen(graph, layout) if mode == "seen" else CandidateSet.all(layout)
    t_cands = time.perf_counter() - t0 - t_filter
    if cset is not None:
        counts = rank_all_sides(
            relation_model,
            edges,
            ("lhs", "rhs"),
            layout,
            cache,
            filters,
            ev.batch_size,
            workers=workers,
            candidate_set=cset,
        )
    else:
        counts = {}
        for target in ("lhs", "rhs"):
            gen = np.random.default_rng([cfg.runtime.seed, 1 if target == "rhs" else 0])
            counts[target] = rank_sampled(
                relation_model,
                edges,
                target,
                layout,
                cache,
                filters[target],
                ev.num_batch_negatives,
                ev.num_uniform_negatives,
                ev.batch_size,
                gen,
                workers=workers,
            )
    metrics = summarize(counts["lhs"], counts["rhs"], edges.rel, [r.name for r in graph.relations], ev.hits_at)
    protocol: dict[str, Any] = {
        "candidates": mode,
        "candidate_set": CANDIDATE_SETS[mode],
        "filtered": bool(do_filter),
        "filter_splits": used_splits,
        "rank": "realistic (mean of optimistic and pessimistic; optimistic/pessimistic also reported)",
        "auc": "fraction of ranked negatives scoring below the truth, ties 1/2",
        "sides": "lhs = rank the true lhs for (?, r, y); rhs = rank the true rhs for (x, r, ?); mean = both",
        "hits_at": list(ev.hits_at),
    }
    if mode == "sampled":
        protocol["sampled"] = {
            "label": "SAMPLED candidates: not comparable to all-entity ranking",
            "num_batch_negatives": ev.num_batch_negatives,
            "num_uniform_negatives": ev.num_uniform_negatives,
            "uniform_from": "the true entity's partition",
            "seed": cfg.runtime.seed,
        }
    return {
        "split": split,
        "protocol": protocol,
        "counts": {
            "edges": len(edges),
            "queries": 2 * len(edges),
            "entities": {name: int(t.count) for name, t in graph.entity_types.items()},
            "candidates": dict(cset.counts) if cset is not None else None,
            "filter_entries": {t: (f.keys.size if f is not None else 0) for t, f in filters.items()},
        },
        "metrics": metrics,
        "device": str(dev),
        "seconds": {
            "filter_index": round(t_filter, 4),
            "candidate_set": round(t_cands, 4),
            "total": round(time.perf_counter() - t0, 4),
        },
    }


def validation_metrics(
    cfg: Config,
    graph: Graph,
    embeddings: EmbeddingSource,
    relation_model: RelationModel,
    *,
    split: str = "valid",
    candidates: str = "sampled",
    max_edges: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Flat metrics for a trainer's log line (``training.validation_mrr``): mean over both sides.

    Filters with train+valid only, so test edges never influence training-time numbers.  ``max_edges``
    defaults to ``training.num_eval_steps * validation_data.per_replica_batch_size`` (all edges when
    ``num_eval_steps < 0``).
    """
    if max_edges is None and cfg.training.num_eval_steps >= 0:
        max_edges = max(1, cfg.training.num_eval_steps * cfg.validation_data.per_replica_batch_size)
    result = evaluate_model(
        cfg,
        graph,
        embeddings,
        relation_model,
        split,
        candidates=candidates,
        filter_splits=("train", "valid"),
        max_edges=max_edges,
        device=device,
    )
    mean = result["metrics"]["overall"]["mean"]
    out = {f"{split}_{k}": float(v) for k, v in mean.items() if isinstance(v, (int, float))}
    out[f"{split}_seconds"] = float(result["seconds"]["total"])
    return out

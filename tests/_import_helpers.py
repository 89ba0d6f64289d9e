"""Helpers for the importer tests: config builders, source writers and the edge-multiset round trip."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tbg.config import Config, parse_config
from tbg.graph import Graph


def make_config(
    graph_dir: Path | str,
    train: str,
    valid: str,
    *,
    tables: dict[str, int | None] | None = None,
    partitions: int = 1,
    relations: list[tuple[str, str, str]] | None = None,
    graph: dict[str, Any] | None = None,
    train_window: dict[str, int] | None = None,
    valid_window: dict[str, int] | None = None,
    test: str | None = None,
) -> Config:
    """A small valid config; ``tables`` maps name -> num_embeddings (None: names mode, counted)."""
    tables = tables if tables is not None else {"user": 50, "tweet": 30}
    relations = relations or [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("follow", "user", "user")]
    data: dict[str, Any] = {
        "model": {
            "embeddings": {
                "tables": [
                    {
                        "name": name,
                        "embedding_dim": 4,
                        "num_partitions": partitions,
                        "optimizer": {"sgd": {"lr": 0.1}},
                        **({"num_embeddings": n} if n is not None else {}),
                    }
                    for name, n in tables.items()
                ]
            },
            "relations": [{"name": n, "lhs": lhs, "rhs": rhs} for n, lhs, rhs in relations],
            "translation_optimizer": {"sgd": {"lr": 0.1}},
        },
        "train_data": {"data_root": train, **(train_window or {})},
        "validation_data": {"data_root": valid, **(valid_window or {})},
        "graph": {"dir": str(graph_dir), **(graph or {})},
    }
    if test is not None:
        data["test_data"] = {"data_root": test}
    return parse_config(data)


def random_index_edges(n: int, seed: int, sizes: dict[str, int], relations: list[tuple[str, str, str]]) -> dict:
    """Integer-id edges valid for ``relations`` with table sizes ``sizes``."""
    rng = np.random.default_rng(seed)
    rel = rng.integers(0, len(relations), n)
    lhs_n = np.array([sizes[r[1]] for r in relations])[rel]
    rhs_n = np.array([sizes[r[2]] for r in relations])[rel]
    return {
        "lhs": (rng.random(n) * lhs_n).astype(np.int64),
        "rel": rel.astype(np.int64),
        "rhs": (rng.random(n) * rhs_n).astype(np.int64),
        "weight": rng.random(n).astype(np.float32),
    }


def write_parquet(path: Path, cols: dict[str, Any], row_group_size: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path, row_group_size=row_group_size)


def write_tsv(path: Path, rows: list[tuple], header: list[str] | None = None, delimiter: str = "\t") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [delimiter.join(header)] if header else []
    lines += [delimiter.join(str(x) for x in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


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


def source_multiset(lhs, rel, rhs, weight=None) -> Counter:
    w = [None] * len(lhs) if weight is None else [float(np.float32(x)) for x in weight]
    return Counter(zip(list(lhs), [int(x) for x in rel], list(rhs), w))

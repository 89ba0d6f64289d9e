"""Append benchmark: `tbg import --append` of new edges (with new entities) against a full re-import of the
grown graph; prints JSON.

A seeded TwHIN-shaped graph (user/tweet, 4 relations, skewed activity) of ``--base`` edges is imported once;
``--append`` more edges, a tenth of whose users and tweets are new, are then appended to a fresh copy of it,
and the base and new edges together are imported from scratch, alternating (append, re-import, append, ...)
for ``--rounds`` rounds, in both id modes (names: TSV with string ids; indices: Parquet, num_embeddings
grown).  Append speed is the appended edges over the append's wall time; re-import speed is all edges over
the re-import's.

    python tools/bench/append_bench.py [--base 2000000] [--append 200000] [--rounds 3] [--partitions 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

import tbg

USERS, TWEETS = 200_000, 40_000
RELATIONS = ["fav", "reply", "retweet", "magic_recs"]
GROWTH = 1.1  # the appended edges draw from 10% more users and tweets


def _edges(n: int, users: int, tweets: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "lhs": ((rng.zipf(1.3, n) - 1) % users).astype(np.int64),
        "rel": rng.integers(0, len(RELATIONS), n).astype(np.int64),
        "rhs": ((rng.zipf(1.3, n) - 1) % tweets).astype(np.int64),
    }


def _write(edges: dict[str, np.ndarray], path: str, mode: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mode == "indices":
        pq.write_table(pa.table(edges), path, row_group_size=1 << 20)
        return
    text = pa.table({
        "lhs": pc.binary_join_element_wise("u", pa.array(edges["lhs"]).cast(pa.string()), ""),
        "rel": pa.array(np.array(RELATIONS)[edges["rel"]]),
        "rhs": pc.binary_join_element_wise("t", pa.array(edges["rhs"]).cast(pa.string()), ""),
    })  # fmt: skip
    pacsv.write_csv(text, path, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))


def _config(mode: str, graph: str, train: str, parts: int, grown: bool) -> dict:
    scale = GROWTH if grown else 1.0
    tables = [
        {"name": "user", "embedding_dim": 8, "num_partitions": parts, "optimizer": {"adagrad": {"lr": 0.1}},
         **({"num_embeddings": int(USERS * scale)} if mode == "indices" else {})},
        {"name": "tweet", "embedding_dim": 8, "num_partitions": parts, "optimizer": {"adagrad": {"lr": 0.1}},
         **({"num_embeddings": int(TWEETS * scale)} if mode == "indices" else {})},
    ]  # fmt: skip
    g = {"dir": graph, "id_mode": mode, "relation_by": "index" if mode == "indices" else "name"}
    if mode == "names":
        g.update(format="tsv", columns={"lhs": 0, "rel": 1, "rhs": 2})
    return {
        "training": {"save_dir": os.path.dirname(graph)},
        "model": {
            "translation_optimizer": {"adagrad": {"lr": 0.1}},
            "embeddings": {"tables": tables},
            "relations": [{"name": r, "lhs": "user", "rhs": "tweet"} for r in RELATIONS],
        },
        "graph": g,
        "train_data": {"data_root": train},
        "validation_data": {"data_root": train, "limit": 1000},
    }


def bench(mode: str, base: int, append: int, rounds: int, parts: int, root: str) -> dict:
    ext = "parquet" if mode == "indices" else "tsv"
    src = os.path.join(root, mode)
    _write(_edges(base, USERS, TWEETS, seed=1), os.path.join(src, "all", f"part-0.{ext}"), mode)
    new = os.path.join(src, "all", f"part-1.{ext}")
    _write(_edges(append, int(USERS * GROWTH), int(TWEETS * GROWTH), seed=2), new, mode)
    base_graph = os.path.join(src, "base", "graph")
    tbg.import_graph(_config(mode, base_graph, os.path.join(src, "all", f"part-0.{ext}"), parts, False))
    append_s, reimport_s, new_entities = [], [], {}
    for _ in range(rounds):
        work = os.path.join(src, "work", "graph")
        shutil.rmtree(os.path.dirname(work), ignore_errors=True)
        shutil.copytree(base_graph, work)
        cfg = _config(mode, work, os.path.join(src, "all", f"part-0.{ext}"), parts, True)
        start = time.perf_counter()
        summary = tbg.import_graph(cfg, append=new)
        append_s.append(time.perf_counter() - start)
        new_entities = summary.new_entities
        full = os.path.join(src, "full", "graph")
        shutil.rmtree(os.path.dirname(full), ignore_errors=True)
        cfg = _config(mode, full, os.path.join(src, "all"), parts, True)
        start = time.perf_counter()
        tbg.import_graph(cfg)
        reimport_s.append(time.perf_counter() - start)
    a, r = statistics.median(append_s), statistics.median(reimport_s)
    return {
        "mode": mode,
        "base_edges": base,
        "appended_edges": append,
        "new_entities": new_entities,
        "append_s": round(a, 3),
        "reimport_s": round(r, 3),
        "append_edges_per_s": round(append / a),
        "reimport_edges_per_s": round((base + append) / r),
        "reimport_over_append_time": round(r / a, 2),
        "append_s_all": [round(x, 3) for x in append_s],
        "reimport_s_all": [round(x, 3) for x in reimport_s],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, default=2_000_000)
    ap.add_argument("--append", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--modes", nargs="+", default=["names", "indices"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tbg-append-bench-") as root:
        results = [bench(m, args.base, args.append, args.rounds, args.partitions, root) for m in args.modes]
    print(json.dumps({"partitions": args.partitions, "load": os.getloadavg()[0], "results": results}, indent=1))


if __name__ == "__main__":
    main()

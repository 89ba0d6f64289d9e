#!/usr/bin/env python3
"""Query benchmark: index build seconds, queries/s and recall@10 of the approximate index against exact (JSON).

Two tables:
  twhin  the TwHIN-shaped sample (``tbg synth configs/local.yaml``: 424,241 users, 72,543 tweets, d=32), trained;
         ``predict`` user -fav-> tweet and ``neighbors`` among users.  With ``--config`` whose checkpoint exists it
         is used as is; otherwise the sample is generated, imported and trained for one epoch under ``--work``.
  big    10,000,000 x d=64 entities in 4 partitions (seeded Gaussian mixture: 16,384 N(0, 1) centres plus
         N(0, noise²) per coordinate, noise 0.5 by default; ``--big-noise 0`` for i.i.d. N(0, 1) vectors, the
         worst case for any index), ``neighbors`` by dot product.
For each: exact (flat) and approximate (ivf) indexes through the query engine, an nprobe sweep, and (twhin)
HNSW against IVF on the raw faiss indexes, which is how the default index kind was chosen.

    python tools/bench/query_bench.py [--config configs/local.yaml] [--work runs/bench/query] [--skip-big]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import yaml
from one_type import one_type_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

K = 10
SWEEP_DIVISORS = (64, 32, 16, 8, 4)  # nprobe = nlist // d


def _rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _tbg(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-m", "tbg", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def twhin_config(config: str | None, work: str):
    """A trained TwHIN-shaped sample: the given config's, else generated + imported + trained (1 epoch)."""
    from tbg.checkpoint import CheckpointStore
    from tbg.config import load_config

    if config:
        cfg = load_config(config)
        if CheckpointStore(cfg.training.save_dir).latest() is not None:
            return cfg, config
    with open(os.path.join(ROOT, "configs", "local.yaml")) as fh:
        data = yaml.safe_load(fh)
    base = os.path.abspath(os.path.join(work, "twhin"))
    data["training"]["save_dir"] = os.path.join(base, "run")
    data["training"]["num_epochs"] = 1
    for key in ("train_data", "validation_data"):
        data[key]["data_root"] = os.path.join(base, "data", "edges", "*.parquet")
    data["test_data"]["data_root"] = os.path.join(base, "data", "test", "*.parquet")
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, "config.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(data, fh)
    cfg = load_config(path)
    if CheckpointStore(cfg.training.save_dir).latest() is None:
        _tbg("synth", path, "--overwrite")
        _tbg("import", path, "--overwrite")
        _tbg("train", path, "--fresh", "--no-progress")
    return cfg, path


def big_config(work: str, rows: int, dim: int, parts: int, comparator: str, noise: float):
    """A graph dir (indices mode) and one checkpoint of ``rows`` x ``dim`` mixture vectors, built once."""
    from tbg.checkpoint import CheckpointStore
    from tbg.config import dump_config
    from tbg.graph import GraphWriter, PartitionLayout

    base = os.path.abspath(os.path.join(work, f"big_{rows}x{dim}_p{parts}_{comparator}_noise{noise}"))
    cfg = one_type_config(
        os.path.join(base, "run"),
        dim=dim,
        count=rows,
        parts=parts,
        operator="none",
        model={"comparator": comparator},
        graph={"dir": os.path.join(base, "graph"), "id_mode": "indices"},
    )
    store = CheckpointStore(cfg.training.save_dir)
    if store.latest() is not None:
        return cfg
    rng = np.random.default_rng(0)
    writer = GraphWriter(cfg.graph_dir)
    os.makedirs(cfg.graph_dir, exist_ok=True)
    writer.write_entities("entity", rng.permutation(rows).astype(np.int64), parts)
    writer.write_manifest("indices", {"entity": (rows, parts)}, [("rel", "entity", "entity")], {})
    centres = rng.standard_normal((16_384, dim), dtype=np.float32)
    w = store.begin(1)
    b = PartitionLayout(rows, parts).bounds
    for p in range(parts):
        n = int(b[p + 1] - b[p])
        table = np.empty((n, dim), dtype=np.float32)
        for a in range(0, n, 1 << 20):
            m = min(n, a + (1 << 20)) - a
            block = rng.standard_normal((m, dim), np.float32)
            if noise > 0:  # else i.i.d. N(0, 1)
                block *= np.float32(noise)
                block += centres[rng.integers(0, len(centres), m)]
            table[a : a + m] = block
        w.write_embeddings("entity", p, table)
        del table
    w.write_relations({})
    w.write_file("config.yaml", dump_config(cfg))
    w.commit({"step": 0})
    return cfg


def _recall(exact: list[dict], approx: list[dict]) -> float:
    hits = [
        len({r["name"] for r in a["results"][:K]} & {r["name"] for r in e["results"][:K]})
        / max(1, len(e["results"][:K]))
        for e, a in zip(exact, approx)
    ]
    return round(float(np.mean(hits)), 4)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def engine_case(cfg, kind: str, task: str, queries, ctype: str, cache_dir: str | None):
    """Build seconds (every partition of the candidate type), then queries/s (batch) and answers."""
    from tbg.query.engine import QueryEngine

    if cache_dir is not None:  # build_s measures a build, never a cache hit of an earlier run
        shutil.rmtree(cache_dir, ignore_errors=True)
    engine = QueryEngine.open(cfg, index=kind, cache_dir=cache_dir)
    parts = engine.tables.num_partitions(ctype)
    _, build_s = _timed(lambda: [engine.tables.index(ctype, p) for p in range(parts)])

    def ask(nprobe=None):
        engine.nprobe = nprobe
        if task == "predict":
            return engine.predict_batch(queries, K)
        return engine.neighbors_batch(queries, K)

    out = {"kind": kind, "build_s": round(build_s, 2)}
    if kind == "flat":
        answers, s = _timed(ask)
        out.update(queries_per_s=round(len(queries) / s, 1))
        return out, {None: answers}
    spec = engine.tables.spec(ctype, 0)
    out["nlist_per_partition"] = spec.nlist
    indexes = [engine.tables.index(ctype, p) for p in range(parts)]
    out["calibrated_nprobe"] = [i.nprobe for i in indexes]
    out["calibration_recall@10"] = [round(i.recall, 4) for i in indexes]
    runs = {}
    for nprobe in [None, *sorted({max(1, spec.nlist // d) for d in SWEEP_DIVISORS})]:
        runs[nprobe], s = _timed(lambda nprobe=nprobe: ask(nprobe))
        row = {"nprobe": nprobe or "calibrated", "queries_per_s": round(len(queries) / s, 1)}
        out.setdefault("sweep", []).append(row)
    if cache_dir is not None:  # a later process: index from the cache (checksum + read) instead of a build
        again = QueryEngine.open(cfg, index=kind, cache_dir=cache_dir)
        _, load_s = _timed(lambda: [again.tables.index(ctype, p) for p in range(parts)])
        out["cache_load_s"] = round(load_s, 2)
    return out, runs


def run_case(cfg, task: str, queries, ctype: str, cache_dir: str | None) -> dict:
    exact, ex_answers = engine_case(cfg, "flat", task, queries, ctype, None)
    approx, ap_answers = engine_case(cfg, "ivf", task, queries, ctype, cache_dir)
    for row, answers in zip(approx["sweep"], ap_answers.values()):
        row[f"recall@{K}"] = _recall(ex_answers[None], answers)
    return {"task": task, "queries": len(queries), "candidate_type": ctype, "exact": exact, "approx": approx}


def hnsw_vs_ivf(cfg, etype: str, nq: int) -> dict:
    """Raw faiss on one table's prepared vectors: HNSW32 (efSearch sweep) vs IVF (nprobe sweep), exact truth."""
    import faiss

    from tbg.query.engine import QueryEngine
    from tbg.query.index import default_nlist

    engine = QueryEngine.open(cfg, cache_dir=None)
    shard = engine.tables.shard(etype, 0)
    x = engine.tables.prepare(shard.block(0, shard.rows))
    rng = np.random.default_rng(1)
    q = x[rng.choice(len(x), nq, replace=False)]
    metric = faiss.METRIC_INNER_PRODUCT if engine.tables.metric == "ip" else faiss.METRIC_L2
    flat = faiss.IndexFlat(x.shape[1], metric)
    flat.add(x)
    _, truth = flat.search(q, K)

    def recall(labels):
        return round(float(np.mean([len(set(a) & set(b)) / K for a, b in zip(labels, truth)])), 4)

    out = {"rows": len(x), "dim": x.shape[1], "queries": nq}
    hnsw = faiss.IndexHNSWFlat(x.shape[1], 32, metric)
    _, out["hnsw32_build_s"] = _timed(lambda: hnsw.add(x))
    out["hnsw"] = []
    for ef in (16, 32, 64, 128):
        hnsw.hnsw.efSearch = ef
        (_, labels), s = _timed(lambda: hnsw.search(q, K))
        out["hnsw"].append({"efSearch": ef, "queries_per_s": round(nq / s, 1), f"recall@{K}": recall(labels)})
    nlist = default_nlist(len(x))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlat(x.shape[1], metric), x.shape[1], nlist, metric)
    _, train_s = _timed(lambda: ivf.train(x[rng.choice(len(x), min(len(x), nlist * 64), replace=False)]))
    _, add_s = _timed(lambda: ivf.add(x))
    out["ivf_build_s"], out["ivf_nlist"], out["ivf"] = round(train_s + add_s, 2), nlist, []
    for nprobe in (8, 16, 32, 64):
        ivf.nprobe = nprobe
        (_, labels), s = _timed(lambda: ivf.search(q, K))
        out["ivf"].append({"nprobe": nprobe, "queries_per_s": round(nq / s, 1), f"recall@{K}": recall(labels)})
    out["hnsw32_build_s"] = round(out["hnsw32_build_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="a trained TwHIN-sample config (default: build one under --work)")
    ap.add_argument("--work", default=os.path.join(ROOT, "runs", "bench", "query"))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--big-rows", type=int, default=10_000_000)
    ap.add_argument("--big-dim", type=int, default=64)
    ap.add_argument("--big-partitions", type=int, default=4)
    ap.add_argument("--big-noise", type=float, default=0.5, help="mixture noise scale; 0 = i.i.d. Gaussian vectors")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-twhin", action="store_true")
    ap.add_argument("--skip-hnsw", action="store_true")
    args = ap.parse_args()
    import faiss
    import torch

    from tbg.query.engine import Prediction

    result: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "faiss": faiss.__version__,
        "threads": torch.get_num_threads(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    rng = np.random.default_rng(0)
    if not args.skip_twhin:
        cfg, path = twhin_config(args.config, args.work)
        from tbg.graph import Graph

        graph = Graph(cfg.graph_dir)
        users = graph.names("user")[rng.choice(graph.entity_types["user"].count, args.queries, replace=False)]
        cache = os.path.join(args.work, "twhin_index_cache")
        result["twhin"] = {
            "config": path,
            "predict": run_case(cfg, "predict", [Prediction("fav", "lhs", str(u)) for u in users], "tweet", cache),
            "neighbors": run_case(cfg, "neighbors", [("user", str(u)) for u in users], "user", cache),
        }
        if not args.skip_hnsw:
            result["twhin"]["index_choice_user_table"] = hnsw_vs_ivf(cfg, "user", args.queries)
        print(json.dumps(result["twhin"], indent=1), file=sys.stderr)
    if not args.skip_big:
        cfg, build_s = _timed(
            lambda: big_config(args.work, args.big_rows, args.big_dim, args.big_partitions, "dot", args.big_noise)
        )
        ids = rng.choice(args.big_rows, args.queries, replace=False)
        cache = os.path.join(args.work, "big_index_cache")
        result["big"] = {
            "rows": args.big_rows,
            "dim": args.big_dim,
            "partitions": args.big_partitions,
            "comparator": "dot",
            "noise": args.big_noise,
            "data_s": round(build_s, 1),
            "neighbors": run_case(cfg, "neighbors", [("entity", str(i)) for i in ids], "entity", cache),
        }
    result["peak_rss_gib"] = _rss_gib()
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""PyTorch-BigGraph 1.0.0 on tbg's WordNet split, ranked by tbg's own evaluator (one JSON line).

    python tools/bench/pbg_wordnet.py [--partitions 1|4] [--epochs 10] [--workers N]
                                      [--pbg-venv /work/pbgvenv] [--out runs/bench/pbg_p1]

Why: docs/benchmarks.md compares tbg's WordNet benchmark (tools/bench/train_bench.py) with PyTorch-BigGraph
trained on the same machine.  That comparison is only fair when both systems see identical data and are
scored by the identical metric.  PBG's own ``torchbiggraph_eval`` ranks against sampled negatives (or, with
``all_negs``, against one partition), unfiltered, with pessimistic ties, so its numbers cannot be set beside
tbg's filtered all-entity MRR.  This script therefore:

1. imports data/wordnet/{train,valid,test}.tsv with PBG's own ``torchbiggraph_import_from_tsv`` (dynamic
   relations mode; all three splits, so every entity tbg knows has a PBG embedding);
2. trains with ``torchbiggraph_train`` (the PBG venv at --pbg-venv) on the train split with the reference
   config: translation operator per side (dynamic relations = tbg's ``relation_sides: both``), dot
   comparator, softmax loss, d=100, Adagrad lr 0.1, batch 1000, 50 batch + 1000 uniform negatives;
   wall time and peak RSS are of the training process alone (the import is reported separately);
3. converts PBG's checkpoint into a tbg checkpoint over tbg's P=1 WordNet graph (runs/bench/graph_p1):
   rows mapped by entity name, relations by name, PBG's lhs operator -> tbg ``lhs_operators`` (ranks rhs:
   c(g_r(x), y')), PBG's rhs operator -> tbg ``rhs_operators`` (ranks lhs: c(x', h_r(y)));
4. evaluates that checkpoint with ``tbg.evaluation.checkpoint_eval.evaluate_checkpoint`` (filtered,
   all entities, realistic ranks), exactly as train_bench.py evaluates tbg's own runs.

With --partitions 4 PBG trains 4 partitions (its negatives come from the resident partition only); the
evaluation still ranks every test edge against all 116,650 entities of tbg's single-partition graph.

``train_s`` is the wall of the whole ``torchbiggraph_train`` process: interpreter and torch import, worker
pool spawn, the final checkpoint, and PBG 1.0.0's default ``hogwild_delay`` (kept as shipped: in epoch 0
every Hogwild worker but the first sleeps 2 s per bucket, which is ~2 s in all at P=1 and ~30 s at P=4).
``bucket_compute_s`` is the sum of PBG's own per-bucket compute times from its log.
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import h5py
import numpy as np

# The PBG subprocesses get the caller's environment as it was at start, before train_bench's import-time
# GOMP_SPINCOUNT default (a tbg setting) can leak into it.
_START_ENV = dict(os.environ)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))

ENTITY = "entity"
DATA = os.path.join(ROOT, "data", "wordnet")
SPLITS = ("train", "valid", "test")


def pbg_config(out: str, partitions: int, epochs: int, workers: int) -> dict[str, Any]:
    """The issue's reference config in PBG 1.0.0's schema (torchbiggraph/config.py: unknown keys are errors)."""
    return {
        "entity_path": os.path.join(out, "entities"),
        "edge_paths": [os.path.join(out, "edges", "train")],
        "checkpoint_path": os.path.join(out, "checkpoints"),
        "entities": {ENTITY: {"num_partitions": partitions}},
        # dynamic mode: one template; every WordNet relation gets a translation on each side
        "relations": [{"name": "all_edges", "lhs": ENTITY, "rhs": ENTITY, "operator": "translation"}],
        "dynamic_relations": True,
        "global_emb": False,  # PBG refuses global embeddings with dynamic relations
        "dimension": 100,
        "comparator": "dot",
        "loss_fn": "softmax",
        "lr": 0.1,
        "num_uniform_negs": 1000,
        "num_batch_negs": 50,
        "batch_size": 1000,
        "num_epochs": epochs,
        "eval_fraction": 0.0,
        "workers": workers,
    }


def write_pbg_config(path: str, config: dict[str, Any]) -> None:
    """PBG loads a Python file defining ``get_torchbiggraph_config()`` (it copies it under a unique name)."""
    lead = "    return "
    body = pprint.pformat(config, sort_dicts=False, width=110).replace("\n", "\n" + " " * len(lead))
    with open(path, "w") as fh:
        fh.write(f'"""Written by tools/bench/pbg_wordnet.py."""\n\n\ndef get_torchbiggraph_config():\n{lead}{body}\n')


def ensure_tbg_graph(epochs: int) -> Any:
    """tbg's WordNet P=1 config and graph (imported like train_bench.py does when missing)."""
    import train_bench

    train_bench.ensure_data()
    cfg = train_bench.variant_config("ref_p1", None, epochs)
    if not os.path.exists(os.path.join(cfg.graph_dir, "manifest.json")):
        from tbg.importer import import_graph

        import_graph(cfg, overwrite=False, progress=False)
    return cfg


def run_import(bin_dir: str, config_path: str, out: str, log: str) -> float:
    """PBG's importer over all three splits (outputs out/edges/<split>); returns its wall seconds."""
    if os.path.isdir(os.path.join(out, "entities")):
        shutil.rmtree(os.path.join(out, "entities"))
    if os.path.isdir(os.path.join(out, "edges")):
        shutil.rmtree(os.path.join(out, "edges"))
    edge_outs = ",".join(os.path.join(out, "edges", s) for s in SPLITS)
    cmd = [os.path.join(bin_dir, "torchbiggraph_import_from_tsv"), config_path]
    cmd += [os.path.join(DATA, f"{s}.tsv") for s in SPLITS]
    # 1.0.0 has no --dynamic-relations flag: the mode comes from the config's dynamic_relations.
    cmd += ["--lhs-col", "0", "--rel-col", "1", "--rhs-col", "2", "-p", f"edge_paths={edge_outs}"]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=_START_ENV, cwd=out)
    wall = time.perf_counter() - t0
    # Only the train edges are read again (the evaluation uses tbg's graph).  PBG 1.0.0 preallocates ~157 MB
    # of HDF5 chunks per bucket file however few edges it holds: 3 * P^2 files is 7 GB at P=4.
    for split in SPLITS[1:]:
        shutil.rmtree(os.path.join(out, "edges", split))
    return wall


_RSS_HELPER = """
import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"max_rss_kb": r.ru_maxrss, "rc": rc}, open(sys.argv[1], "w"))
sys.exit(rc)
"""


def run_train(bin_dir: str, config_path: str, out: str, log: str) -> tuple[float, float]:
    """torchbiggraph_train, fresh; returns (wall seconds, peak RSS MB of its largest process).

    RSS: GNU time's "Maximum resident set size" (wait4 rusage: the largest of the process and its waited
    children, i.e. the coordinator or one Hogwild worker, not their sum), else the same number from
    RUSAGE_CHILDREN of a dedicated helper process.
    """
    ckpt = os.path.join(out, "checkpoints")
    if os.path.isdir(ckpt):
        shutil.rmtree(ckpt)  # PBG resumes from any checkpoint it finds
    rss_file = os.path.join(out, "train_rusage.txt")
    train = [os.path.join(bin_dir, "torchbiggraph_train"), config_path]
    if os.access("/usr/bin/time", os.X_OK):
        cmd = ["/usr/bin/time", "-v", "-o", rss_file, *train]
    else:
        cmd = [sys.executable, "-c", _RSS_HELPER, rss_file, *train]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_START_ENV, cwd=out)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(log) as fh:
            tail = fh.read().strip().splitlines()[-5:]
        raise SystemExit(f"torchbiggraph_train failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail))
    with open(rss_file) as fh:
        text = fh.read()
    if text.lstrip().startswith("{"):
        kb = int(json.loads(text)["max_rss_kb"])
    else:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        if m is None:
            raise SystemExit(f"{rss_file}: no maximum resident set size")
        kb = int(m.group(1))
    return wall, kb / 1024


def bucket_compute_s(log: str) -> float:
    """Sum of PBG's own per-bucket "Processed N edges in X s" (Hogwild compute only: no start-up, I/O, save)."""
    with open(log) as fh:
        return sum(float(m.group(1)) for m in re.finditer(r"Processed \d+ edges in ([0-9.]+) s", fh.read()))


def final_loss(out: str) -> float | None:
    """Mean training loss of the last epoch (count-weighted over its buckets) from training_stats.json."""
    path = os.path.join(out, "checkpoints", "training_stats.json")
    try:
        with open(path) as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    except OSError:
        return None
    rows = [r for r in rows if "stats" in r and "epoch_idx" in r]  # one row per bucket and edge chunk
    if not rows:
        return None
    last = max(r["epoch_idx"] for r in rows)
    epoch = [r["stats"] for r in rows if r["epoch_idx"] == last]
    total = sum(s["count"] for s in epoch)
    loss = sum(s["metrics"]["loss"] * s["count"] for s in epoch)
    return round(loss / total, 4) if total else None


def read_pbg_checkpoint(out: str, partitions: int) -> dict[str, Any]:
    """PBG's latest checkpoint: per-partition embeddings and names, per-side translations, relation names."""
    ckpt = os.path.join(out, "checkpoints")
    with open(os.path.join(ckpt, "checkpoint_version.txt")) as fh:
        version = int(fh.read().strip())
    embs, names = [], []
    for p in range(partitions):
        with h5py.File(os.path.join(ckpt, f"embeddings_{ENTITY}_{p}.v{version}.h5"), "r") as f:
            embs.append(f["embeddings"][...])
        with open(os.path.join(out, "entities", f"entity_names_{ENTITY}_{p}.json")) as fh:
            names.append(json.load(fh))
        if len(names[-1]) != embs[-1].shape[0]:
            raise SystemExit(f"partition {p}: {len(names[-1])} names but {embs[-1].shape[0]} embeddings")
    ops: dict[str, np.ndarray] = {}
    with h5py.File(os.path.join(ckpt, f"model.v{version}.h5"), "r") as f:

        def visit(_name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                ops[str(obj.attrs.get("state_dict_key", _name))] = obj[...]

        f["model"].visititems(visit)
    with open(os.path.join(out, "entities", "dynamic_rel_names.json")) as fh:
        rel_names = json.load(fh)
    return {
        "version": version,
        "embeddings": embs,
        "names": names,
        # private names: {side}_operators.{relation template}.{param}; dynamic translations are [num_rels, dim]
        "lhs": ops["lhs_operators.0.translations"],
        "rhs": ops["rhs_operators.0.translations"],
        "rel_names": rel_names,
    }


def to_tbg_checkpoint(cfg: Any, pbg: dict[str, Any], edges_seen: int, epochs: int) -> str:
    """Write PBG's model as a committed tbg checkpoint in cfg.training.save_dir; returns the version dir."""
    from tbg.checkpoint import CheckpointStore
    from tbg.config import dump_config
    from tbg.consistency import model_fingerprint
    from tbg.graph import Graph

    graph = Graph(cfg.graph_dir)
    et = graph.entity_types[ENTITY]
    if et.num_partitions != 1:
        raise SystemExit(f"{graph.path}: expected tbg's single-partition graph, found {et.num_partitions}")
    tbg_names = graph.names(ENTITY)
    index = {str(n): i for i, n in enumerate(tbg_names)}
    dim = pbg["embeddings"][0].shape[1]
    table = np.zeros((et.count, dim), dtype=np.float32)
    seen = np.zeros(et.count, dtype=bool)
    for emb, names in zip(pbg["embeddings"], pbg["names"], strict=True):
        try:
            ids = np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
        except KeyError as exc:
            raise SystemExit(f"PBG entity {exc} is not in tbg's graph {graph.path}") from None
        _, off = graph.locate(ENTITY, ids)  # tbg's graph has one partition
        if seen[off].any():
            raise SystemExit("an entity appears twice in PBG's partitions")
        table[off], seen[off] = emb, True
    if not seen.all():
        raise SystemExit(f"{int((~seen).sum())} of tbg's entities have no PBG embedding")

    pbg_rel = {n: i for i, n in enumerate(pbg["rel_names"])}
    tbg_rels = [r.name for r in cfg.model.relations]
    if sorted(pbg_rel) != sorted(tbg_rels):
        raise SystemExit(f"relation names differ: PBG {sorted(pbg_rel)}, tbg {sorted(tbg_rels)}")
    order = np.array([pbg_rel[n] for n in tbg_rels])
    # PBG dynamic mode: rhs operator h_r in c(x', h_r(y)) ranks lhs = tbg rhs_operators (target "lhs");
    # lhs operator g_r in c(g_r(x), y') ranks rhs = tbg lhs_operators (target "rhs").
    relations = {
        "rhs_operators.translation": pbg["rhs"][order].astype(np.float32),
        "lhs_operators.translation": pbg["lhs"][order].astype(np.float32),
    }

    save_dir = cfg.training.save_dir
    if os.path.isdir(save_dir):
        shutil.rmtree(save_dir)
    writer = CheckpointStore(save_dir).begin(1)
    try:
        writer.write_embeddings(ENTITY, 0, table)
        writer.write_relations(relations)
        writer.write_file("config.yaml", dump_config(cfg))
        return writer.commit(
            {
                "step": 0,
                "epoch": epochs,
                "bucket_index": 0,
                "position": 0,
                "edges_seen": edges_seen,
                "finished": True,
                "model_fingerprint": model_fingerprint(cfg),
                "graph_import_id": graph.import_id,
                "source": f"PyTorch-BigGraph checkpoint v{pbg['version']} (tools/bench/pbg_wordnet.py)",
            }
        )
    except BaseException:
        writer.abort()
        raise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, choices=(1, 4), default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="PBG Hogwild workers (default: cores)")
    ap.add_argument("--pbg-venv", default="/work/pbgvenv")
    ap.add_argument("--out", help="work dir (default: runs/bench/pbg_p<partitions>)")
    args = ap.parse_args()
    out = os.path.abspath(args.out or os.path.join(ROOT, "runs", "bench", f"pbg_p{args.partitions}"))
    bin_dir = os.path.join(args.pbg_venv, "bin")
    if not os.access(os.path.join(bin_dir, "torchbiggraph_train"), os.X_OK):
        raise SystemExit(f"{bin_dir}: no torchbiggraph_train (install torchbiggraph==1.0.0 in --pbg-venv)")
    os.makedirs(out, exist_ok=True)

    cfg = ensure_tbg_graph(args.epochs)  # builds data/wordnet when missing
    cfg.training.save_dir = os.path.join(out, "tbg")  # never runs/bench/ref_p1
    config = pbg_config(out, args.partitions, args.epochs, args.workers)
    config_path = os.path.join(out, "pbg_config.py")
    write_pbg_config(config_path, config)

    import_s = run_import(bin_dir, config_path, out, os.path.join(out, "import.log"))
    print(f"PBG import: {import_s:.1f} s", file=sys.stderr)
    train_s, rss_mb = run_train(bin_dir, config_path, out, os.path.join(out, "train.log"))
    print(f"PBG train: {train_s:.1f} s, peak RSS {rss_mb:.0f} MB", file=sys.stderr)

    with open(os.path.join(DATA, "train.tsv"), "rb") as fh:
        num_train = sum(1 for _ in fh)
    edges = num_train * args.epochs
    pbg = read_pbg_checkpoint(out, args.partitions)
    version_dir = to_tbg_checkpoint(cfg, pbg, edges, args.epochs)

    from tbg.evaluation.checkpoint_eval import evaluate_checkpoint

    t0 = time.perf_counter()
    res = evaluate_checkpoint(cfg, split="test", checkpoint=version_dir)
    mean = res["metrics"]["overall"]["mean"]
    result: dict[str, Any] = {
        "system": "pbg",
        "partitions": args.partitions,
        "epochs": args.epochs,
        "edges": edges,
        "train_s": round(train_s, 2),
        "edges_per_s": round(edges / train_s),
        "peak_rss_mb": round(rss_mb),
        "filtered_mrr": round(mean["mrr"], 4),
        "hits@10": round(mean["hits@10"], 4),
        "bucket_compute_s": round(bucket_compute_s(os.path.join(out, "train.log")), 2),
        "final_loss": final_loss(out),
        "import_s": round(import_s, 1),
        "eval_s": round(time.perf_counter() - t0, 1),
        "workers": args.workers,
        "tbg_checkpoint": version_dir,
        "pbg_config": config,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

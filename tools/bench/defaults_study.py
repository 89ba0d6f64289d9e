#!/usr/bin/env python3
"""Defaults study: seeded runs of negative schemes x embedding optimizer x lr on three graphs, JSON per run.

    python tools/bench/defaults_study.py --graphs wordnet --schemes relation,chunk5,whole \\
        --optimizers adagrad,row_adagrad --out runs/study/results.jsonl
    python tools/bench/defaults_study.py --graphs wordnet --partitions 4 --schemes chunk5,whole
    python tools/bench/defaults_study.py --graphs twhin --schemes relation,default

Graphs are the short configs (only the keys a PBG/TwHIN user sets): ``wordnet`` = configs/wordnet_short.yaml,
``wordnet_typed`` = configs/wordnet_typed.yaml (entity type = part of speech), ``twhin`` = configs/local.yaml
(the TwHIN-shaped sample of ``tbg synth``).  A scheme is a set of train_data/validation_data overrides
(:data:`SCHEMES`; ``default`` = none, i.e. what the short config gets).  ``--optimizers`` sets every table's
optimizer (``asis`` keeps the config's), ``--lrs`` every optimizer's lr (``asis`` keeps it).

Each run trains in its own ``nice -n 19`` subprocess with ``runtime.hogwild_workers: 1`` and
``runtime.num_threads: 1`` (bit-reproducible: the same run gives the same MRR), then evaluates the test split
filtered over all candidates (``eval.candidates`` of the config) and appends one JSON line to ``--out``.
Graphs are imported once under runs/study/graphs/.  Data: tools/build_wordnet.py --typed, tbg synth
configs/local.yaml.  Timings on a shared machine are indicative only; MRR is the comparison.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from typing import Any

if "OMP_WAIT_POLICY" not in os.environ:  # as `tbg train` does (tbg/train/cli.py: bounded_omp_spin)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

GRAPHS = {
    "wordnet": "configs/wordnet_short.yaml",
    "wordnet_typed": "configs/wordnet_typed.yaml",
    "twhin": "configs/local.yaml",
}


def _scheme(in_batch_scope: str, global_scope: str, per_draw: int = 1, in_batch: str | None = None) -> dict[str, Any]:
    over: dict[str, Any] = {"in_batch_scope": in_batch_scope, "global_negatives_scope": global_scope}
    over["global_negatives_chunks_per_draw"] = per_draw
    return over | ({"in_batch_negatives": in_batch} if in_batch else {})


# scheme -> data-section overrides (applied to train_data and validation_data); "B" = the batch size
SCHEMES: dict[str, dict[str, Any]] = {
    "default": {},  # whatever the short config gets from the defaults
    "relation": _scheme("relation", "batch"),  # TwHIN: S in-batch per relation, G uniform shared by the batch
    "batch": _scheme("batch", "batch"),  # S of the whole batch (any relation), G shared by the batch
    "chunk1": _scheme("chunk", "chunk", 1),  # PBG exactly: chunks of S edges, each its own draw of G
    "chunk5": _scheme("chunk", "chunk", 5),  # configs/wordnet.yaml: chunks of S, one draw of G per 5 chunks
    "chunk_shared": _scheme("chunk", "batch"),  # chunks of S, one draw of G for the whole batch
    "whole": _scheme("batch", "batch", 1, "B"),  # the whole batch (each edge against the other B-1) + G shared
    "whole_relation": _scheme("relation", "batch", 1, "B"),  # the whole batch per relation + G shared
}


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def run_config(graph: str, scheme: str, optimizer: str, lr: str, partitions: int, seed: int, epochs: int | None):
    """The config of one run: the graph's short config with the scheme/optimizer/lr overrides applied."""
    from tbg.config import parse_config

    data = _load_yaml(os.path.join(ROOT, GRAPHS[graph]))
    for section in ("train_data", "validation_data"):
        if section not in data:
            continue
        for key, value in SCHEMES[scheme].items():
            data[section][key] = data[section].get("per_replica_batch_size", 1000) if value == "B" else value
    model = data["model"]
    for table in model["embeddings"]["tables"]:
        opt = table["optimizer"]
        kind = next(k for k in opt if k != "learning_rate")
        params = copy.deepcopy(opt[kind])
        if lr != "asis":
            params["lr"] = float(lr)
        table["optimizer"] = {optimizer if optimizer != "asis" else kind: params}
        if partitions:
            table["num_partitions"] = partitions
    if lr != "asis":
        tr = model["translation_optimizer"]
        tr[next(k for k in tr if k != "learning_rate")]["lr"] = float(lr)
        tr.pop("learning_rate", None)
        for table in model["embeddings"]["tables"]:
            table.pop("learning_rate", None)
    parts = partitions or max(t.get("num_partitions", 1) for t in model["embeddings"]["tables"])
    tag = f"{graph}_p{parts}_{scheme}_{optimizer}_lr{lr}_s{seed}"
    data.setdefault("runtime", {}).update({"hogwild_workers": 1, "num_threads": 1, "seed": seed})
    training = data.setdefault("training", {})
    training.update({"save_dir": os.path.join(ROOT, "runs/study", tag), "checkpoint_every_n": 10**9})
    training.update({"eval_log_every_n": 10**9, "num_train_steps": 10**9})
    if epochs is not None:
        training["num_epochs"] = epochs
    for section in ("train_data", "validation_data", "test_data"):  # relative paths: from the repo root
        if section in data and not os.path.isabs(data[section]["data_root"]):
            data[section]["data_root"] = os.path.join(ROOT, data[section]["data_root"])
    data.setdefault("graph", {})["dir"] = os.path.join(ROOT, "runs/study/graphs", f"{graph}_p{parts}")
    return parse_config(data), tag


def run_one(graph: str, scheme: str, optimizer: str, lr: str, partitions: int, seed: int, epochs: int | None):
    cfg, tag = run_config(graph, scheme, optimizer, lr, partitions, seed, epochs)
    if not os.path.exists(os.path.join(cfg.graph_dir, "manifest.json")):
        from tbg.importer import import_graph

        import_graph(cfg, overwrite=False, progress=False)
    from tbg.evaluation.checkpoint_eval import evaluate_checkpoint
    from tbg.train.trainer import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    trainer.start(fresh=True)
    summary = trainer.run()
    wall = time.perf_counter() - t0
    res = evaluate_checkpoint(cfg, split="test")
    mean = res["metrics"]["overall"]["mean"]
    td = cfg.train_data
    return {
        "run": tag, "graph": graph, "scheme": scheme, "optimizer": optimizer, "lr": lr,
        "partitions": cfg.model.embeddings.tables[0].num_partitions, "seed": seed, "epochs": cfg.training.num_epochs,
        "negatives": {"in_batch": td.in_batch_negatives, "uniform": td.global_negatives,
                      "scope": str(td.in_batch_scope), "global_scope": str(td.global_negatives_scope),
                      "chunks_per_draw": td.global_negatives_chunks_per_draw,
                      "resolved": [str(x) for x in td.negative_scheme()]},  # in_batch_scope auto resolved
        "table_optimizers": sorted({str(t.optimizer.kind) for t in cfg.model.embeddings.tables}),
        "mrr": round(mean["mrr"], 4), "hits@10": round(mean["hits@10"], 4),
        "candidates": res["protocol"]["candidates"], "edges": summary["edges"],
        "train_s": round(summary["wall_s"], 1), "edges_per_s": round(summary["edges"] / wall),
        "eval_s": res["seconds"]["total"], "bf16": summary["bf16"], "loadavg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", default="wordnet", help=f"comma list of {', '.join(GRAPHS)}")
    ap.add_argument("--schemes", default="relation,chunk5,whole", help=f"comma list of {', '.join(SCHEMES)}")
    ap.add_argument("--optimizers", default="asis", help="comma list: asis, adagrad, row_adagrad")
    ap.add_argument("--lrs", default="asis", help="comma list of lrs for every optimizer (asis: the config's)")
    ap.add_argument("--partitions", default="0", help="comma list (0: the config's)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=None, help="override num_epochs (quick looks only)")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs/study/results.jsonl"), help="JSON lines appended here")
    ap.add_argument("--one", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        g, s, o, lr, p, seed = args.one
        print(json.dumps(run_one(g, s, o, lr, int(p), int(seed), args.epochs)))
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for graph in args.graphs.split(","):
        for parts in args.partitions.split(","):
            for scheme in args.schemes.split(","):
                for opt in args.optimizers.split(","):
                    for lr in args.lrs.split(","):
                        for seed in args.seeds.split(","):
                            cmd = ["nice", "-n", "19", sys.executable, __file__, "--one", graph, scheme, opt, lr]
                            cmd += [parts, seed] + (["--epochs", str(args.epochs)] if args.epochs else [])
                            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                            if proc.returncode != 0:
                                tail = proc.stderr.strip().splitlines()[-3:]
                                line = {"graph": graph, "scheme": scheme, "optimizer": opt, "lr": lr, "error": tail}
                            else:
                                line = json.loads(proc.stdout.strip().splitlines()[-1])
                            with open(args.out, "a", encoding="utf-8") as fh:
                                fh.write(json.dumps(line) + "\n")
                            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

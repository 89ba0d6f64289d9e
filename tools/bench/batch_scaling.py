#!/usr/bin/env python3
"""Large batches on WordNet: filtered MRR and edges/s per batch size and learning-rate rule (JSON lines).

    python tools/bench/batch_scaling.py --batches 1000,10000,30000,100000 --rules auto
    python tools/bench/batch_scaling.py --batches 10000 --rules none,sqrt,linear [--set key=value ...]

Each run trains configs/wordnet_short.yaml (only PBG-level keys: Adagrad lr 0.1 for tables and relations,
10 epochs) at ``train_data.per_replica_batch_size`` = B (validation too), with ``optimizer.lr_scaling`` of
every optimizer set to the rule (``auto``: the default; ``none``: the config's lr at any B; ``sqrt`` /
``linear``: lr x (B / 1000)^(1/2 or 1)), in its own subprocess, then ranks the test split filtered over all
entities.  ``--set`` adds overrides to every run.  Results are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))

import train_bench  # noqa: E402  (sets the OpenMP spin default as `tbg train` does)

BASE = "configs/wordnet_short.yaml"


def overrides(batch: int, rule: str) -> list[str]:
    out = [f"train_data.per_replica_batch_size={batch}", f"validation_data.per_replica_batch_size={batch}"]
    if rule != "asis":
        out += [f"model.translation_optimizer.lr_scaling={rule}"]
        out += [f"model.embeddings.tables[0].optimizer.lr_scaling={rule}"]
    return out


def run_one(batch: int, rule: str, extra: list[str], tag: str) -> dict[str, object]:
    from tbg.config import load_config

    cfg = load_config(os.path.join(ROOT, BASE), overrides(batch, rule) + extra)
    cfg = train_bench.bench_config(cfg, f"batch_{tag}")
    return train_bench.train_eval(cfg, {"run": tag, "config": BASE, "rule": rule, "set": extra})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1000,10000,30000,100000")
    ap.add_argument("--rules", default="auto", help="comma list: auto, none, sqrt, linear (asis: leave the config's)")
    ap.add_argument("--set", action="append", default=[], help="key=value override for every run")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        batch, rule, tag = args.one
        print(json.dumps(run_one(int(batch), rule, args.set, tag)))
        return 0
    train_bench.ensure_data()
    for batch in args.batches.split(","):
        for rule in args.rules.split(","):
            tag = f"b{batch}_{rule}"
            cmd = [sys.executable, __file__, "--one", batch, rule, tag] + [f"--set={s}" for s in args.set]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                line = {"run": tag, "error": proc.stderr.strip().splitlines()[-3:]}
            else:
                line = json.loads(proc.stdout.strip().splitlines()[-1])
            line["loadavg_1m"] = round(os.getloadavg()[0], 2)
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

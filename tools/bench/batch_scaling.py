#!/usr/bin/env python3
"""Large batches on WordNet: filtered MRR and edges/s per batch size and learning-rate rule (JSON lines).

    python tools/bench/batch_scaling.py --batches 1000,10000,30000,100000 --rules auto
    python tools/bench/batch_scaling.py --batches 10000 --rules none,sqrt,linear [--set key=value ...]
    python tools/bench/batch_scaling.py --speed 200000 --batches 1000,10000,30000,100000 [--rounds 2]

Each run trains configs/wordnet_short.yaml (only PBG-level keys: Adagrad lr 0.1 for tables and relations,
10 epochs) at ``train_data.per_replica_batch_size`` = B (validation too), with ``optimizer.lr_scaling`` of
every optimizer set to the rule (``auto``: the default; ``none``: the config's lr at any B; ``sqrt`` /
``linear``: lr x (B / 1000)^(1/2 or 1)), in its own subprocess, then ranks the test split filtered over all
entities.  ``--set`` adds overrides to every run.  ``--speed EDGES`` times training only (about EDGES edges per
batch size, at least 2 steps, each in its own process, the batch sizes alternating over ``--rounds``).
Results are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))

import train_bench  # noqa: E402  (sets the OpenMP spin default as `tbg train` does)

BASE = "configs/wordnet_short.yaml"


def run_suffix(extra: list[str]) -> str:
    """Part of a run's name that tells its ``--set`` overrides apart (runs with other overrides, e.g. of a
    concurrent invocation, then never share a save_dir)."""
    return "_" + hashlib.sha1("\n".join(extra).encode()).hexdigest()[:8] if extra else ""


def overrides(batch: int, rule: str) -> list[str]:
    out = [f"train_data.per_replica_batch_size={batch}", f"validation_data.per_replica_batch_size={batch}"]
    if rule != "asis":
        out += [f"model.translation_optimizer.lr_scaling={rule}"]
        out += [f"model.embeddings.tables[0].optimizer.lr_scaling={rule}"]
    return out


def run_one(batch: int, rule: str, extra: list[str], tag: str) -> dict[str, object]:
    from tbg.config import load_config

    cfg = load_config(os.path.join(ROOT, BASE), overrides(batch, rule) + extra)
    cfg = train_bench.bench_config(cfg, f"batch_{tag}{run_suffix(extra)}")
    return train_bench.train_eval(cfg, {"run": tag, "config": BASE, "rule": rule, "set": extra})


def speed_one(batch: int, edges: int, extra: list[str]) -> dict[str, object]:
    """Training speed only: about ``edges`` edges (at least 2 steps) of the short config at batch ``batch``."""
    from tbg.config import load_config
    from tbg.train.trainer import Trainer

    cfg = load_config(os.path.join(ROOT, BASE), overrides(batch, "asis") + extra)
    cfg = train_bench.bench_config(cfg, f"speed_b{batch}{run_suffix(extra)}")
    cfg.training.num_train_steps = max(2, -(-edges // batch))
    if not os.path.exists(os.path.join(cfg.graph_dir, "manifest.json")):
        from tbg.importer import import_graph

        import_graph(cfg, overwrite=False, progress=False)
    trainer = Trainer(cfg, progress=False)
    trainer.start(fresh=True)
    summary = trainer.run()
    td = cfg.train_data
    return {"batch_size": batch, "steps": summary["steps"], "edges": summary["edges"],
            "loop_s": round(summary["wall_s"], 2), "edges_per_s": round(summary["edges_per_s"]),
            "hogwild_workers": summary["hogwild_workers"], "bf16": summary["bf16"], "set": extra,
            "negatives": [str(x) for x in td.negative_scheme()] + [str(x) for x in td.uniform_scheme()]}  # fmt: skip


def speed(batches: list[str], edges: int, rounds: int, extra: list[str]) -> int:
    """Edges/s per batch size, each in its own process, alternating over ``rounds``; ratios to the first."""
    runs: dict[str, list[dict[str, object]]] = {b: [] for b in batches}
    for _ in range(rounds):
        for batch in batches:
            cmd = [sys.executable, __file__, "--speed-one", batch, str(edges)] + [f"--set={s}" for s in extra]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                line: dict[str, object] = {"batch_size": int(batch), "error": proc.stderr.strip().splitlines()[-3:]}
            else:
                line = json.loads(proc.stdout.strip().splitlines()[-1])
            line["loadavg_1m"] = round(os.getloadavg()[0], 2)
            runs[batch].append(line)
            print(json.dumps(line), file=sys.stderr, flush=True)
    best = {b: max((r.get("edges_per_s", 0) for r in rs), default=0) for b, rs in runs.items()}
    first = best[batches[0]] or 1
    out = {"edges_per_s_best": best, "ratio_to_first": {b: round(v / first, 2) for b, v in best.items()}, "runs": runs}
    print(json.dumps(out, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1000,10000,30000,100000")
    ap.add_argument("--rules", default="auto", help="comma list: auto, none, sqrt, linear (asis: leave the config's)")
    ap.add_argument("--set", action="append", default=[], help="key=value override for every run")
    ap.add_argument(
        "--speed",
        type=int,
        default=0,
        metavar="EDGES",
        help="time training only: about EDGES edges per batch size (no evaluation), alternating",
    )
    ap.add_argument("--rounds", type=int, default=2, help="with --speed: rounds over the batch sizes")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--speed-one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.speed_one:
        print(json.dumps(speed_one(int(args.speed_one[0]), int(args.speed_one[1]), args.set)))
        return 0
    if args.speed:
        train_bench.ensure_data()
        return speed(args.batches.split(","), args.speed, args.rounds, args.set)
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

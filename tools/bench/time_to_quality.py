#!/usr/bin/env python3
"""Time to PBG's quality on WordNet, side by side with PyTorch-BigGraph 1.0.0 in one run (JSON).

    python tools/bench/time_to_quality.py [--repeat 2] [--fast configs/wordnet_fast.yaml] [--pbg-venv /work/pbgvenv]
    python tools/bench/time_to_quality.py --only fast --fast-set training.num_epochs=4   # search, no PBG run

Each round runs, in this order, every one in its own process:

1. ``pbg``: PyTorch-BigGraph's 10-epoch WordNet reference run (tools/bench/pbg_wordnet.py: same split and
   model, ranked by tbg's evaluator);
2. ``fast`` / ``fast_fp32``: ``tbg train`` of the fastest tbg config found that reaches PBG's 10-epoch
   filtered MRR (``--fast``, default configs/wordnet_fast.yaml), with ``runtime.cpu_bf16`` as the config says
   (auto: bf16 score GEMMs where the CPU has native bf16) and off;
3. ``ref`` / ``ref_fp32``: ``tbg train`` of the reference config (configs/wordnet.yaml: PBG's model, batch and
   negatives, 10 epochs), bf16 auto and off.

A train time is the wall of the whole training process, as for PBG: interpreter and torch import, the run,
its final checkpoint (``train_s``; ``loop_s`` is tbg's own training-loop wall).  Ranking the test split
(filtered, all entities) is not timed.  ``summary`` gives per-variant medians over the rounds and the ratios
of medians: ``speedup_to_quality`` = PBG train s / fast train s (target >= 8), ``edges_per_s_ratio`` = ref
edges/s / PBG edges/s (target >= 2.5), each with bf16 on and off; ``per_round`` ratios are within one round
(the machine drifts: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))

import train_bench  # noqa: E402

PBG_MRR = 0.577  # PBG 1.0.0's 10-epoch filtered MRR at P=1 (docs/benchmarks.md)
WORK = os.path.join(ROOT, "runs", "ttq")
GRAPH = os.path.join(ROOT, "runs", "bench", "graph_p1")  # shared with train_bench.py and pbg_wordnet.py


def tbg_cmd(config: str, name: str, extra: list[str]) -> list[str]:
    sets = [f"training.save_dir={os.path.join(WORK, name)}", f"graph.dir={GRAPH}", *extra]
    cmd = [sys.executable, "-m", "tbg", "train", config, "--fresh", "--no-progress", "--json"]
    return cmd + [x for s in sets for x in ("--set", s)]


def run_tbg(config: str, name: str, extra: list[str]) -> dict[str, Any]:
    """``tbg train`` in its own process (timed whole), then the test split ranked in this one."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(tbg_cmd(config, name, extra), capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"variant": name, "error": proc.stderr.strip().splitlines()[-3:]}
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    from tbg.config import load_config
    from tbg.evaluation.checkpoint_eval import evaluate_checkpoint

    cfg = load_config(os.path.join(ROOT, config), [f"training.save_dir={os.path.join(WORK, name)}",
                                                   f"graph.dir={GRAPH}", *extra])  # fmt: skip
    mean = evaluate_checkpoint(cfg, split="test")["metrics"]["overall"]["mean"]
    return {
        "variant": name, "config": config, "set": extra, "epochs": cfg.training.num_epochs,
        "batch_size": cfg.train_data.per_replica_batch_size, "edges": summary["edges"],
        "train_s": round(wall, 2), "loop_s": round(summary["wall_s"], 2),
        "edges_per_s": round(summary["edges"] / wall), "loop_edges_per_s": round(summary["edges_per_s"]),
        "bf16": summary["bf16"], "hogwild_workers": summary["hogwild_workers"],
        "filtered_mrr": round(mean["mrr"], 4), "hits@10": round(mean["hits@10"], 4),
    }  # fmt: skip


def run_pbg(venv: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.join(ROOT, "tools/bench/pbg_wordnet.py"), "--pbg-venv", venv]
    cmd += ["--out", os.path.join(WORK, "pbg")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"variant": "pbg", "error": proc.stderr.strip().splitlines()[-3:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    keep = ("epochs", "edges", "train_s", "edges_per_s", "filtered_mrr", "hits@10", "bucket_compute_s", "workers")
    return {"variant": "pbg", **{k: out[k] for k in keep}}


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    def med(variant: str, key: str) -> float | None:
        vals = [r[variant][key] for r in rounds if variant in r and key in r[variant]]
        return round(statistics.median(vals), 4) if vals else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    names = sorted({name for r in rounds for name in r})
    medians = {n: {k: med(n, k) for k in ("train_s", "edges_per_s", "filtered_mrr")} for n in names}
    out: dict[str, Any] = {"medians": medians}
    pbg = medians.get("pbg", {})
    for suffix, tag in (("", "bf16_auto"), ("_fp32", "bf16_off")):
        fast, ref = medians.get("fast" + suffix, {}), medians.get("ref" + suffix, {})
        out[f"speedup_to_quality_{tag}"] = ratio(pbg.get("train_s"), fast.get("train_s"))
        out[f"edges_per_s_ratio_{tag}"] = ratio(ref.get("edges_per_s"), pbg.get("edges_per_s"))
        out[f"fast_reaches_pbg_mrr_{tag}"] = None if not fast else bool(fast["filtered_mrr"] >= PBG_MRR)
    out["per_round"] = [
        {
            "speedup_to_quality": ratio(r.get("pbg", {}).get("train_s"), r.get("fast", {}).get("train_s")),
            "speedup_to_quality_fp32": ratio(r.get("pbg", {}).get("train_s"), r.get("fast_fp32", {}).get("train_s")),
            "edges_per_s_ratio": ratio(r.get("ref", {}).get("edges_per_s"), r.get("pbg", {}).get("edges_per_s")),
            "edges_per_s_ratio_fp32": ratio(
                r.get("ref_fp32", {}).get("edges_per_s"), r.get("pbg", {}).get("edges_per_s")
            ),
        }
        for r in rounds
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="rounds (each runs every variant once, in order)")
    ap.add_argument("--fast", default="configs/wordnet_fast.yaml", help="the tbg config timed to quality")
    ap.add_argument("--fast-set", action="append", default=[], help="key=value override of the fast config")
    ap.add_argument("--ref", default="configs/wordnet.yaml", help="the reference config (edges/s against PBG)")
    ap.add_argument("--only", default="pbg,fast,fast_fp32,ref,ref_fp32", help="comma list of the variants to run")
    ap.add_argument("--pbg-venv", default="/work/pbgvenv")
    args = ap.parse_args()
    train_bench.ensure_data()
    if not os.path.exists(os.path.join(GRAPH, "manifest.json")):
        from tbg.importer import import_graph

        import_graph(train_bench.variant_config("ref_p1", None, None), overwrite=False, progress=False)
    off = ["runtime.cpu_bf16=off"]
    variants = {
        "pbg": lambda: run_pbg(args.pbg_venv),
        "fast": lambda: run_tbg(args.fast, "fast", args.fast_set),
        "fast_fp32": lambda: run_tbg(args.fast, "fast_fp32", args.fast_set + off),
        "ref": lambda: run_tbg(args.ref, "ref", []),
        "ref_fp32": lambda: run_tbg(args.ref, "ref_fp32", off),
    }
    wanted = args.only.split(",")
    unknown = [w for w in wanted if w not in variants]
    if unknown:
        raise SystemExit(f"--only: unknown variant(s) {unknown}; known: {list(variants)}")
    rounds: list[dict[str, dict[str, Any]]] = []
    load = [round(x, 2) for x in os.getloadavg()]
    for _ in range(args.repeat):
        rnd: dict[str, dict[str, Any]] = {}
        for name in wanted:
            rnd[name] = variants[name]()
            rnd[name]["loadavg_1m"] = round(os.getloadavg()[0], 2)
            print(json.dumps(rnd[name]), file=sys.stderr, flush=True)
        rounds.append(rnd)
    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": load,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "pbg_mrr_target": PBG_MRR, "rounds": rounds, "summary": summarize(rounds),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Training benchmark on WordNet 3.0: edges/s, wall, peak RSS, final loss, filtered MRR/Hits@10 (JSON).

    python tools/bench/train_bench.py                      # ref_p1, ref_p4, fast
    python tools/bench/train_bench.py --variants fast --threads 1

The reference config is configs/wordnet.yaml (translation + dot + softmax, d=100, PBG's batched negatives:
chunks of 50 edges with 1000 uniform samples each, one draw per 5 chunks, batch 1000, row-wise Adagrad lr 0.1,
10 epochs).
Data is built with tools/build_wordnet.py
(needs Debian's wordnet-base) and imported under runs/bench/ when missing.  Each variant trains in its own
subprocess so peak RSS is its own; RSS is taken right after training, before evaluation.  Results, and
PyTorch-BigGraph's on the same machine and config (tools/bench/pbg_wordnet.py), are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

if "OMP_WAIT_POLICY" not in os.environ:  # as `tbg train` does (tbg/train/cli.py: bounded_omp_spin)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

# variant -> dotted overrides of the reference config
VARIANTS: dict[str, dict[str, object]] = {
    # configs/wordnet.yaml as written: PBG's batched negatives (chunks of 50 edges, each against its chunk's
    # positives and 1000 uniform samples), one uniform draw per 5 chunks (4 per batch), row-wise Adagrad
    "ref_p1": {},
    "ref_p4": {"partitions": 4},
    # one worker using every core as intra-op threads (runtime.hogwild_workers auto: a worker per core, up to 4)
    "ref_p1_1worker": {"runtime.hogwild_workers": 1},
    # PBG's scheme exactly: every chunk its own draw (20,000 sampled rows per side and step)
    "ref_p1_exact": {"train_data.global_negatives_chunks_per_draw": 1},
    "ref_p4_exact": {"partitions": 4, "train_data.global_negatives_chunks_per_draw": 1},
    # the same chunks, one draw of 1000 uniform samples shared by the whole batch (tbg's default global scope)
    "ref_p1_shared": {"train_data.global_negatives_scope": "batch", "train_data.global_negatives_chunks_per_draw": 1},
    # 50 in-batch negatives drawn from the whole batch + 1000 shared uniform (the cheapest 1050 negatives)
    "ref_p1_batch": {
        "train_data.in_batch_scope": "batch", "train_data.global_negatives_scope": "batch",
        "train_data.global_negatives_chunks_per_draw": 1,
    },
    # the whole batch as one chunk (each positive against the other 999 + 1000 uniform), DESIGN.md's scheme
    "whole_batch": {
        "train_data.in_batch_scope": "batch", "train_data.global_negatives_scope": "batch",
        "train_data.global_negatives_chunks_per_draw": 1, "train_data.in_batch_negatives": 1000,
        "embedding_optimizer": "adagrad",
    },
    # fastest config found that reaches PBG's filtered MRR (0.577): whole-batch in-batch negatives only
    "fast": {
        "train_data.in_batch_scope": "batch", "train_data.global_negatives_scope": "batch",
        "train_data.global_negatives_chunks_per_draw": 1, "train_data.in_batch_negatives": 1000,
        "train_data.global_negatives": 0, "training.num_epochs": 6,
        "embedding_optimizer": "adagrad",
    },
    # tools/gpu_check.sh: the reference config on CUDA at batch sizes 1k / 10k / 100k (the lr follows the batch
    # by the default `optimizer.lr_scaling: auto`, docs/training.md)
    "gpu_b1k": {"runtime.device": "cuda"},
    "gpu_b10k": {"runtime.device": "cuda", "train_data.per_replica_batch_size": 10_000},
    "gpu_b100k": {"runtime.device": "cuda", "train_data.per_replica_batch_size": 100_000},
}  # fmt: skip


def ensure_data() -> None:
    if os.path.exists(os.path.join(ROOT, "data/wordnet/train.tsv")):
        return
    if not os.path.isdir("/usr/share/wordnet"):
        subprocess.run(["apt-get", "update"], check=False)
        subprocess.run(["apt-get", "install", "-y", "wordnet-base"], check=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools/build_wordnet.py")], check=True, cwd=ROOT)


def variant_config(name: str, threads: int | None, epochs: int | None):
    from tbg.config import AdagradConfig, OptimizerConfig, RowAdagradConfig, load_config

    over = dict(VARIANTS[name])
    parts = int(over.pop("partitions", 1))
    kind = over.pop("embedding_optimizer", None)
    # the rest as `--set key=value`: typed (enums included) and validated like the config file
    cfg = load_config(os.path.join(ROOT, "configs/wordnet.yaml"), [f"{k}={json.dumps(v)}" for k, v in over.items()])
    cfg.model.embeddings.tables[0].num_partitions = parts
    if kind is not None:  # elementwise "adagrad" or "row_adagrad", lr 0.1
        lr = cfg.model.embeddings.tables[0].optimizer.params.lr
        cfg.model.embeddings.tables[0].optimizer = {
            "adagrad": OptimizerConfig(adagrad=AdagradConfig(lr=lr)),
            "row_adagrad": OptimizerConfig(row_adagrad=RowAdagradConfig(lr=lr)),
        }[kind]
    return bench_config(cfg, name, threads, epochs)


def bench_config(cfg, name: str, threads: int | None = None, epochs: int | None = None):  # noqa: ANN001, ANN201
    """A WordNet config set up for a benchmark run: save dir runs/bench/<name>, only the final checkpoint, no
    validation, the graph of its partition count under runs/bench/graph_p<P> (shared by every variant)."""
    if epochs is not None:
        cfg.training.num_epochs = epochs
    parts = cfg.model.embeddings.tables[0].num_partitions
    cfg.training.save_dir = os.path.join(ROOT, "runs/bench", name)
    cfg.training.checkpoint_every_n = 10**9  # only the final checkpoint (it is inside the timed wall)
    cfg.training.eval_log_every_n = 10**9
    cfg.training.num_train_steps = 10**9
    cfg.graph.dir = os.path.join(ROOT, f"runs/bench/graph_p{parts}")
    for section in (cfg.train_data, cfg.validation_data, cfg.test_data):  # data paths from the repo root
        if section is not None and not os.path.isabs(section.data_root):
            section.data_root = os.path.join(ROOT, section.data_root)
    cfg.runtime.num_threads = threads
    return cfg


def _cpu() -> float:
    """Process CPU seconds (user + sys): with other jobs on the machine, wall time alone misleads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_one(name: str, threads: int | None, epochs: int | None) -> dict[str, object]:
    return train_eval(variant_config(name, threads, epochs), {"variant": name})


def train_eval(cfg, label: dict[str, object]) -> dict[str, object]:  # noqa: ANN001
    """Import the graph when missing, train ``cfg`` fresh and rank its test split: one JSON-ready dict."""
    if not os.path.exists(os.path.join(cfg.graph_dir, "manifest.json")):
        from tbg.importer import import_graph

        import_graph(cfg, overwrite=False, progress=False)
    from tbg.train.trainer import Trainer

    t0, cpu0 = time.perf_counter(), _cpu()
    trainer = Trainer(cfg, progress=False)
    trainer.start(fresh=True)
    summary = trainer.run()
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    td = cfg.train_data
    out: dict[str, object] = dict(label)
    out.update({
        "partitions": cfg.model.embeddings.tables[0].num_partitions, "batch_size": td.per_replica_batch_size,
        "epochs": cfg.training.num_epochs, "edges": summary["edges"], "steps": summary["steps"],
        "train_s": round(summary["wall_s"], 2), "wall_s": round(wall, 2), "edges_per_s": round(summary["edges"] / wall),
        "cpu_s": round(cpu, 1), "peak_rss_mb": round(rss_mb),
        "final_loss": summary["final_loss"], "bf16": summary["bf16"], "threads": summary["threads"],
        "hogwild_workers": summary["hogwild_workers"],
        "negatives": {"in_batch": td.in_batch_negatives, "uniform": td.global_negatives,
                      "resolved": [str(x) for x in td.negative_scheme()]},
    })  # fmt: skip
    if "lr" in summary:
        out["lr"] = summary["lr"]
    try:
        from tbg.evaluation.checkpoint_eval import evaluate_checkpoint

        t_eval = time.perf_counter()
        res = evaluate_checkpoint(cfg, split="test")
        mean = res["metrics"]["overall"]["mean"]
        out.update({"filtered_mrr": round(mean["mrr"], 4), "hits@10": round(mean["hits@10"], 4),
                    "eval_s": round(time.perf_counter() - t_eval, 2), "eval_device": res.get("device")})  # fmt: skip
    except ImportError as exc:  # evaluation not available in this tree
        out["eval_error"] = str(exc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="ref_p1,ref_p4,whole_batch,fast")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    ap.add_argument("--epochs", type=int, default=None, help="override num_epochs (quick looks)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.threads, args.epochs)))
        return 0
    ensure_data()
    results = []
    for name in args.variants.split(","):
        cmd = [sys.executable, __file__, "--one", name]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += ["--epochs", str(args.epochs)] if args.epochs else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            results.append({"variant": name, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    load = os.getloadavg()[0]
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "loadavg_1m": round(load, 2)}, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

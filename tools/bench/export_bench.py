"""Export benchmark: seconds and peak RSS per format for 1M entities x d=100 (synthetic, seeded); prints JSON.

Writes a graph dir (names mode, one type in 4 partitions) and a checkpoint of random float32 vectors in a temp
dir (in a process of its own: Linux keeps a parent's peak RSS across fork and exec, so the processes that
measure are started by a small one), then runs ``tbg.export.export`` for tsv, parquet and npy, each in its own
process (so its peak RSS is its own) into a fresh output dir.  ``--budget`` sets ``runtime.memory_budget``
(export streams the vectors, names and TSV text in blocks that fit it).

    python tools/bench/export_bench.py [--entities 1000000] [--dim 100] [--partitions 4] [--budget 64MiB]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from one_type import one_type_config


def config(root: str, dim: int, parts: int, budget: str | None):
    import attrs

    cfg = one_type_config(os.path.join(root, "run"), dim=dim, parts=parts, graph={"id_mode": "names"})
    return attrs.evolve(cfg, runtime=attrs.evolve(cfg.runtime, memory_budget=budget)) if budget else cfg


def build(root: str, count: int, dim: int, parts: int):
    from tbg.checkpoint import CheckpointStore
    from tbg.config import dump_config
    from tbg.graph import GraphWriter, PartitionLayout

    cfg = config(root, dim, parts, None)
    rng = np.random.default_rng(0)
    gdir = cfg.graph_dir
    writer = GraphWriter(gdir)
    perm = rng.permutation(count).astype(np.int64)
    names = np.char.add("Q", np.arange(count).astype("U"))
    writer.write_entities("entity", perm, parts, names.astype(object))
    writer.write_manifest("names", {"entity": (count, parts)}, [("rel", "entity", "entity")], {})
    w = CheckpointStore(cfg.training.save_dir).begin(1)
    b = PartitionLayout(count, parts).bounds
    for p in range(parts):
        w.write_embeddings("entity", p, rng.standard_normal((b[p + 1] - b[p], dim), dtype=np.float32))
    w.write_relations(
        {
            "rhs_operators.translation": np.zeros((1, dim), np.float32),
            "lhs_operators.translation": np.zeros((1, dim), np.float32),
        }
    )
    w.write_file("config.yaml", dump_config(cfg))
    w.commit({"step": 0})
    return cfg


def child(args: argparse.Namespace) -> int:
    """One export in this process: seconds and peak RSS (JSON line)."""
    from tbg.export import export

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = config(args.root, args.dim, args.partitions, args.budget)
    dest = os.path.join(args.root, f"out-{args.child}")
    t0 = time.perf_counter()
    export(cfg, args.child, dest)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(e.stat().st_size for e in os.scandir(dest))
    print(json.dumps({"seconds": round(seconds, 3), "peak_rss_mb": round(peak, 1), "rss_before_mb": round(rss0, 1),
                      "bytes": size, "torch_imported": "torch" in sys.modules}))  # fmt: skip
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--budget", default=None, help="runtime.memory_budget for the exports, e.g. 64MiB")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.build:
        build(args.root, args.entities, args.dim, args.partitions)
        return 0
    with tempfile.TemporaryDirectory(prefix="tbg-export-bench-") as root:
        sizes = ["--entities", str(args.entities), "--dim", str(args.dim), "--partitions", str(args.partitions)]
        subprocess.run([sys.executable, __file__, "--build", "--root", root, *sizes], check=True)
        out: dict[str, object] = {
            "benchmark": "tbg export",
            "entities": args.entities,
            "dim": args.dim,
            "partitions": args.partitions,
            "memory_budget": args.budget,
            "vectors_mb": round(args.entities * args.dim * 4 / 2**20, 1),
            "torch_imported": False,
            "seconds": {},
            "peak_rss_mb": {},
            "rss_at_start_mb": {},
            "bytes": {},
        }
        for fmt in ("tsv", "parquet", "npy"):
            cmd = [sys.executable, __file__, "--child", fmt, "--root", root, "--dim", str(args.dim)]
            cmd += ["--partitions", str(args.partitions)] + (["--budget", args.budget] if args.budget else [])
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            out["seconds"][fmt] = res["seconds"]  # type: ignore[index]
            out["peak_rss_mb"][fmt] = res["peak_rss_mb"]  # type: ignore[index]
            out["rss_at_start_mb"][fmt] = res["rss_before_mb"]  # type: ignore[index]
            out["bytes"][fmt] = res["bytes"]  # type: ignore[index]
            out["torch_imported"] = out["torch_imported"] or res["torch_imported"]
        out["loadavg_1min"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

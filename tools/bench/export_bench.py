"""Export benchmark: seconds per format for 1M entities x d=100 (synthetic, seeded); prints JSON.

Writes a graph dir (names mode, one type in 4 partitions) and a checkpoint of random float32 vectors in a temp
dir, then times ``tbg.export.export`` for tsv, parquet and npy (each into a fresh output dir).

    python tools/bench/export_bench.py [--entities 1000000] [--dim 100] [--partitions 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from one_type import one_type_config


def build(root: str, count: int, dim: int, parts: int):
    from tbg.checkpoint import CheckpointStore
    from tbg.config import dump_config
    from tbg.graph import GraphWriter, PartitionLayout

    cfg = one_type_config(os.path.join(root, "run"), dim=dim, parts=parts, graph={"id_mode": "names"})
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    from tbg.export import export

    with tempfile.TemporaryDirectory(prefix="tbg-export-bench-") as root:
        cfg = build(root, args.entities, args.dim, args.partitions)
        out: dict[str, object] = {
            "benchmark": "tbg export",
            "entities": args.entities,
            "dim": args.dim,
            "partitions": args.partitions,
            "torch_imported": False,
            "seconds": {},
            "bytes": {},
        }
        for fmt in ("tsv", "parquet", "npy"):
            dest = os.path.join(root, f"out-{fmt}")
            t0 = time.perf_counter()
            export(cfg, fmt, dest)
            out["seconds"][fmt] = round(time.perf_counter() - t0, 3)  # type: ignore[index]
            out["bytes"][fmt] = sum(e.stat().st_size for e in os.scandir(dest))  # type: ignore[index]
        out["torch_imported"] = "torch" in sys.modules
        out["loadavg_1min"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

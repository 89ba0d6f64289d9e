"""Import benchmark: edges/s, wall seconds and peak RSS of `tbg import` on generated inputs; prints JSON.

Inputs (seeded, in a temp dir): indices-mode Parquet (TwHIN shape: user/tweet tables, 4 relations) and
names-mode TSV (string ids), at 10M edges and at a quarter of that to show peak RSS does not grow with the
input.  Each measurement runs in its own subprocess so that peak RSS (the child's VmHWM) is per run.

    python tools/bench/import_bench.py [--edges 10000000] [--small 2500000] [--partitions 1 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

USERS, TWEETS = 424_241, 72_543
RELATIONS = ["fav", "reply", "retweet", "magic_recs"]


def _edges(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lhs = (rng.zipf(1.3, n) - 1) % USERS  # skewed activity, like TwHIN
    rhs = (rng.zipf(1.3, n) - 1) % TWEETS
    rel = rng.integers(0, len(RELATIONS), n)
    return lhs.astype(np.int64), rel.astype(np.int64), rhs.astype(np.int64)


def write_inputs(root: str, n: int, files: int = 4) -> dict[str, str]:
    """Parquet (integer ids) and TSV (names) versions of the same n edges, split over ``files`` files."""
    lhs, rel, rhs = _edges(n, seed=n)
    pq_dir, tsv_dir = os.path.join(root, f"pq{n}"), os.path.join(root, f"tsv{n}")
    os.makedirs(pq_dir)
    os.makedirs(tsv_dir)
    bounds = np.linspace(0, n, files + 1).astype(np.int64)
    names = np.array(RELATIONS)
    for k in range(files):
        sl = slice(bounds[k], bounds[k + 1])
        table = pa.table({"lhs": lhs[sl], "rel": rel[sl], "rhs": rhs[sl]})
        pq.write_table(table, os.path.join(pq_dir, f"part-{k:05d}.parquet"), row_group_size=1 << 20)
        text = pa.table(
            {
                "lhs": pc.binary_join_element_wise("u", pa.array(lhs[sl]).cast(pa.string()), ""),
                "rel": pa.array(names[rel[sl]]),
                "rhs": pc.binary_join_element_wise("t", pa.array(rhs[sl]).cast(pa.string()), ""),
            }
        )

        pacsv.write_csv(
            text,
            os.path.join(tsv_dir, f"part-{k:05d}.tsv"),
            write_options=pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"),
        )
    return {"parquet": pq_dir, "tsv": tsv_dir}


def config(root: str, src: str, mode: str, partitions: int, out: str) -> str:
    tables = [
        {"name": "user", "embedding_dim": 4, "num_partitions": partitions, "optimizer": {"sgd": {"lr": 0.1}}},
        {"name": "tweet", "embedding_dim": 4, "num_partitions": partitions, "optimizer": {"sgd": {"lr": 0.1}}},
    ]
    if mode == "indices":
        tables[0]["num_embeddings"], tables[1]["num_embeddings"] = USERS, TWEETS
    graph = {"dir": out, "id_mode": mode}
    if mode == "names":
        graph.update(format="tsv", columns={"lhs": 0, "rel": 1, "rhs": 2})
    data = {
        "model": {
            "embeddings": {"tables": tables},
            "relations": [{"name": r, "lhs": "user", "rhs": "tweet"} for r in RELATIONS],
            "translation_optimizer": {"sgd": {"lr": 0.1}},
        },
        "train_data": {"data_root": os.path.join(src, "*")},
        "validation_data": {"data_root": os.path.join(src, "*"), "limit": 1000},
        "graph": graph,
    }
    import yaml

    path = os.path.join(root, f"cfg-{mode}-{partitions}-{os.path.basename(src)}.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(data, fh)
    return path


_CHILD = """
import json, sys, time
from tbg.config import load_config
from tbg.importer import import_graph
t = time.perf_counter()
s = import_graph(load_config(sys.argv[1]), overwrite=True, progress=False)
wall = time.perf_counter() - t
# VmHWM is this process's own peak (ru_maxrss would carry over the forking parent's peak across exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"edges": s.num_edges, "wall_s": round(wall, 3), "peak_rss_mb": round(hwm / 1024, 1)}))
"""


def measure(cfg: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, cfg], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(time.perf_counter() - start, 3)
    out["edges_per_s"] = round(out["edges"] / out["wall_s"])
    return out


def _size_mb(path: str) -> float:
    return round(sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 2**20, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--small", type=int, default=2_500_000)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--tmp", default=None, help="where to put inputs and graph dirs (default: a temp dir)")
    args = ap.parse_args()
    result: dict = {"cpu_count": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(dir=args.tmp) as root:
        for n in (args.edges, args.small):
            t = time.perf_counter()
            inputs = write_inputs(root, n)
            result.setdefault("generate_s", {})[str(n)] = round(time.perf_counter() - t, 1)
            for fmt, mode in (("parquet", "indices"), ("tsv", "names")):
                partitions = args.partitions if n == args.edges else [max(args.partitions)]
                for p in partitions:
                    out = os.path.join(root, f"graph-{mode}-{p}-{n}")
                    run = measure(config(root, inputs[fmt], mode, p, out))
                    run.update(format=fmt, id_mode=mode, partitions=p, input_edges=n, input_mb=_size_mb(inputs[fmt]))
                    result["runs"].append(run)
                    print(json.dumps(run), file=sys.stderr)
                    subprocess.run(["rm", "-rf", out])
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

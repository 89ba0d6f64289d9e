"""Cost of the checksums of issue 10 (format 2) against a tree without them: prints JSON.

For each tree (alternating, best of ``--repeat``; CPU seconds of the process, all threads, which a busy
machine disturbs less than wall time): ``import_graph`` of 2M edges (indices Parquet, P=4, the
import benchmark's TwHIN shape), reading every train bucket back, and writing + reading a [424241, 32] fp32
shard with an Adagrad state of the same shape; plus the graph dir's size.

    python tools/bench/checksum_overhead.py --before /path/to/old/tree --after . [--tmp DIR]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import import_bench as ib  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--before", required=True, help="a tbg tree without checksums (e.g. a worktree of an older commit)")
ap.add_argument("--after", default=".", help="the tree to measure (default: this one)")
ap.add_argument("--repeat", type=int, default=5)
ap.add_argument("--tmp", default=None)
args = ap.parse_args()
TREES = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
root = tempfile.mkdtemp(dir=args.tmp)
os.chdir(root)  # children run `python -c`, which puts the cwd first on sys.path: no tbg tree there
ib.write_inputs(root, 2_000_000)
READ = r"""
import sys, time, numpy as np
from tbg.config import load_config
from tbg.importer import import_graph
from tbg.graph import Graph
from tbg.checkpoint import write_embedding_file, read_embedding_file
clock = time.process_time
t = clock(); import_graph(load_config(sys.argv[3]), overwrite=True, progress=False); ti = clock() - t
g = Graph(sys.argv[1]); t = clock(); n = 0
for i, j in g.buckets("train"):
    for e in g.iter_bucket("train", i, j, 1 << 20): n += len(e)
tb = clock() - t
emb = np.random.default_rng(0).standard_normal((424241, 32)).astype(np.float32)
t = clock(); write_embedding_file(sys.argv[2], emb, {"sum": np.abs(emb)}); tw = clock() - t
t = clock(); read_embedding_file(sys.argv[2], with_optimizer=True); tr = clock() - t
print(ti, tb, tw, tr, n)
"""
res = {k: {"import_s": [], "read_buckets_s": [], "write_shard_s": [], "read_shard_s": []} for k in TREES}
for _ in range(args.repeat):
    for name, tree in TREES.items():
        out = f"{root}/g_{name}"
        cfg = ib.config(root, f"{root}/pq2000000", "indices", 4, out)
        env = {**os.environ, "PYTHONPATH": tree}
        cmd = [sys.executable, "-c", READ, out, f"{root}/shard_{name}.h5", cfg]
        o = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.split()
        for k, v in zip(("import_s", "read_buckets_s", "write_shard_s", "read_shard_s"), o):
            res[name][k].append(float(v))
summary = {n: {k: round(min(v), 3) for k, v in d.items()} for n, d in res.items()}
for name in TREES:
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(f"{root}/g_{name}") for f in fs]
    summary[name]["graph_dir_mb"] = round(sum(map(os.path.getsize, files)) / 1e6, 2)
summary["load_average"] = os.getloadavg()
subprocess.run(["rm", "-rf", root])
print(json.dumps(summary))

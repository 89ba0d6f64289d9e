"""1 trainer vs 2 trainers (torchrun, gloo) on one machine: edges/s, final MRR, bytes moved per bucket; JSON.

Both runs train the same config (default: WordNet at P=4, ``configs/wordnet_p4.yaml``) for ``--epochs``
epochs from scratch, alternating (1, 2, 1, 2, ...) so drift hits both alike.  One trainer gets every CPU
(``runtime.num_threads`` unset: on 2 cores, 2 Hogwild workers), each of the 2 trainers half of them.  The
distributed run reports rank 0's partition bytes read/written (the shared save_dir's swap files) per bucket it
trained, the all-reduce payload per round, and (where the tree reports them) partition uses, reads and writes
per epoch over both trainers (``epochs_io`` of the run's ``--json`` summary, docs/distributed.md); MRR is
`tbg eval`'s filtered mean over both sides of the test split.

    python tools/bench/dist_bench.py [--config configs/wordnet_p4.yaml] [--epochs 3] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def tbg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tbg", *args], capture_output=True, text=True, check=check)


def train(config: str, sets: list[str], save_dir: str, nproc: int) -> dict:
    cmd = ["train", config, *sets, f"--set=training.save_dir={save_dir}", "--fresh", "--no-progress", "--json"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    started = time.perf_counter()
    proc = tbg(*cmd, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"train failed ({nproc} trainers): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["process_wall_s"] = time.perf_counter() - started  # with start-up (torch import, group forming)
    return summary


def mrr(config: str, sets: list[str], save_dir: str, out: str) -> float:
    tbg("eval", config, *sets, f"--set=training.save_dir={save_dir}", "--json-out", out)
    with open(out) as fh:
        return json.load(fh)["metrics"]["overall"]["mean"]["mrr"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/wordnet_p4.yaml")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tbg-dist-bench-") as root:
        graph = os.path.join(root, "graph")
        sets = [f"--set=graph.dir={graph}", f"--set=training.num_epochs={args.epochs}",
                *(f"--set={s}" for s in args.sets)]  # fmt: skip
        tbg("import", args.config, *sets)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.repeat):
            for n in (1, 2):
                runs[n].append(train(args.config, sets, os.path.join(root, f"run{n}"), n))
        quality = {n: mrr(args.config, sets, os.path.join(root, f"run{n}"), os.path.join(root, f"e{n}.json"))
                   for n in (1, 2)}  # fmt: skip
        two = runs[2][-1]
        moved = two["bytes_moved"]
        buckets = max(1, two["buckets"])
        rate = {n: statistics.median(r["edges_per_s"] for r in runs[n]) for n in runs}
        out = {
            "config": args.config, "epochs": args.epochs, "repeat": args.repeat, "cpus": os.cpu_count(),
            "load_before": os.getloadavg()[0],
            "edges_per_s": {"1_trainer": rate[1], "2_trainers_summed": rate[2]},
            "speedup_2_vs_1": rate[2] / rate[1],
            "train_wall_s": {str(n): [round(r["wall_s"], 2) for r in runs[n]] for n in runs},
            "process_wall_s": {f"{n}": [round(r["process_wall_s"], 2) for r in runs[n]] for n in runs},
            "mrr": {"1_trainer": quality[1], "2_trainers": quality[2]},
            "rounds": two["rounds"], "rank0_buckets": two["buckets"],
            "bytes_per_bucket": {
                "partitions_read": moved["partitions_read"] / buckets,
                "partitions_written": moved["partitions_written"] / buckets,
            },
            "allreduce_bytes_per_round": moved["allreduce"] / max(1, two["rounds"]),
            "rank0_partition_io": two.get("partition_io"), "partition_io_per_epoch": two.get("epochs_io"),
            "hogwild_workers": {"1_trainer": runs[1][-1]["hogwild_workers"], "2_trainers_each": two["hogwild_workers"]},
        }  # fmt: skip
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

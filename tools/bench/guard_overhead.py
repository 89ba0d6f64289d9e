#!/usr/bin/env python3
"""Step overhead of the non-finite guard (tbg/train/finite_guard.py), same process, interleaved A/B (JSON).

    python tools/bench/guard_overhead.py [--config configs/wordnet.yaml] [--graph runs/bench/graph_p1]

A = the trainer's step group as it runs (losses + the sums of each table's update and of the relation parameters
on the device, read back every ``--log-every`` steps with the loss); B = the same step without the sums.  Blocks of
``--block`` steps alternate A, B, A, ... over the same batches, so load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "wordnet.yaml"))
    ap.add_argument("--graph", default=os.path.join(ROOT, "runs", "bench", "graph_p1"))
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    import torch

    from tbg.config import load_config
    from tbg.train.batch_scorer import coalesced_grads
    from tbg.train.edge_stream import batches
    from tbg.train.trainer import Trainer

    save = tempfile.mkdtemp(prefix="guard-bench-")
    cfg = load_config(args.config, [f"graph.dir={args.graph}", f"training.save_dir={save}",
                                    "runtime.hogwild_workers=1", f"runtime.num_threads={args.threads}"])  # fmt: skip
    tr = Trainer(cfg, progress=False)
    tr.start()
    tr.bucket = (0, 0)
    tr.store.need(tr.bucket_keys(tr.bucket))
    size = cfg.train_data.per_replica_batch_size
    work = [b for chunk in tr.edges.chunks(0, tr.bucket, 0) for _, b in batches(chunk, size, 0)]
    worker = tr.workers[0]

    touched: list[dict] = []  # per B step: table -> updated rows (for the isolated timing below)

    def plain(group, first):  # B: the step group without the guard's sums (the trainer before the guard)
        sg = tr._open_group(worker, first, first + len(group) - 1)
        losses = [tr._score(sg, b) for b in group]
        tr.rel_opt.step(cfg.model.translation_optimizer.lr_at(first - 1), worker.params)
        grads = coalesced_grads(sg.gathered)
        touched.append({key: rows for key, (rows, _) in grads.items()})
        for key, (rows, grad) in grads.items():
            res = tr.store.get(key)
            res.optimizer.step(rows, grad, tr.table_opts[key[0]].lr_at(first - 1), owned=True)
        return losses

    def block(guarded: bool, start: int) -> float:
        total = torch.zeros((), dtype=torch.float64)
        t0 = time.perf_counter()
        for i in range(args.block):
            step = start + i
            batch = work[step % len(work)]
            if guarded:
                losses, checks = tr.run_group(worker, [batch], step + 1)
                tr.guard.add(checks)
            else:
                losses = plain([batch], step + 1)
            total += losses[0].double()
            if (i + 1) % args.log_every == 0:
                if guarded:
                    tr.guard.check(lambda: "")
                float(total)
        return (time.perf_counter() - t0) / args.block * 1e3

    block(True, 0), block(False, 0)  # warm-up
    a, b = [], []
    for k in range(args.blocks):
        a.append(block(True, 2 * k * args.block))
        b.append(block(False, (2 * k + 1) * args.block))
    ma, mb = statistics.median(a), statistics.median(b)
    # the guard's own work alone, on updates shaped like the B steps' (fresh tensors, cycled past the caches):
    # the sums, the stack/cat, the read-back every --log-every steps
    from tbg.train.finite_guard import finite_sum

    params = [p for p in tr.model.parameters() if p.numel()]
    dim = next(iter(tr.store.resident.values())).table.shape[1]
    pool = {n: [torch.randn(n, dim) for _ in range(4)] for t in touched for n in (len(r) for r in t.values())}
    loss = torch.zeros(())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i, rows_of in enumerate(touched):
            sums = [torch.stack([finite_sum(p.detach()) for p in params]).sum()]
            sums += [finite_sum(pool[len(r)][i % 4]) for r in rows_of.values()]
            values = torch.cat([torch.stack([loss]).float(), torch.stack(sums)])
            tr.guard.add(type("C", (), {"values": values})())
            if (i + 1) % args.log_every == 0:
                tr.guard.check(lambda: "")
        times.append((time.perf_counter() - t0) / len(touched) * 1e3)
    rows = statistics.mean(sum(len(r) for r in t.values()) for t in touched)
    print(json.dumps({
        "config": os.path.relpath(args.config, ROOT), "batch": size, "threads": args.threads,
        "steps_each": args.blocks * args.block, "guarded_ms_per_step": round(ma, 3),
        "plain_ms_per_step": round(mb, 3), "overhead_pct": round(100 * (ma - mb) / mb, 2),
        "min_guarded_ms": round(min(a), 3), "min_plain_ms": round(min(b), 3),
        "guard_ops_alone_ms_per_step": round(min(times), 4), "updated_rows_per_step": round(rows),
        "guard_ops_pct_of_plain_min": round(100 * min(times) / min(b), 2),
        "guarded_blocks_ms": [round(x, 2) for x in a], "plain_blocks_ms": [round(x, 2) for x in b],
    }))  # fmt: skip


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Profile training steps with torch.profiler on CPU: ATen ops and host-sync ops per step (JSON).

    python tools/bench/step_profile.py --config configs/wordnet.yaml [--steps 20] [--set key=value ...]

One worker with one intra-op thread, so every op of a step (forward, backward, optimizer) runs on the
profiled thread.  Two runs of ``steps`` and ``2 * steps`` steps are profiled and subtracted, so set-up and
profiler overhead cancel; counts are per step.  ``nested`` counts every ATen op the profiler records (an op
called inside another op counts too); ``top_level`` only those with no ATen op above them (per op name in
``top_level_ops`` and ``nested_ops``).  ``sync`` counts the
ops that make the host wait for the device (or copy a host-made tensor to it) on an accelerator: on a GPU
each one stalls the step.  The graph is imported under runs/step_profile/ when the config's graph dir has no
manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

# ATen ops that block the host on a device (their output size or value is data-dependent), or that turn
# host data into a tensor (torch.tensor(...) -> lift_fresh: a host-to-device copy where the step runs on a GPU)
SYNC_OPS = (
    "aten::nonzero", "aten::unique", "aten::_unique", "aten::_unique2", "aten::unique_dim",
    "aten::unique_consecutive", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero",
    "aten::masked_select", "aten::bincount", "aten::repeat_interleave", "aten::lift_fresh",
    "aten::masked_scatter", "aten::nonzero_numpy",
)  # fmt: skip


def _counts(events) -> tuple[Counter, Counter]:  # noqa: ANN001
    """(nested, top-level) ATen op counts of profiler events."""
    nested: Counter = Counter()
    top: Counter = Counter()
    for ev in events:
        if not ev.name.startswith("aten::"):
            continue
        nested[ev.name] += 1
        parent = ev.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            top[ev.name] += 1
    return nested, top


def _config(path: str, overrides: list[str]):  # noqa: ANN202
    from tbg.config import load_config

    cfg = load_config(path, overrides)
    cfg.runtime.device = "cpu"
    cfg.runtime.hogwild_workers = 1
    cfg.runtime.num_threads = 1
    cfg.training.save_dir = tempfile.mkdtemp(prefix="tbg-step-profile-")
    cfg.training.checkpoint_every_n = 10**9
    cfg.training.eval_log_every_n = 10**9
    if not os.path.exists(os.path.join(cfg.graph_dir, "manifest.json")):
        name = os.path.splitext(os.path.basename(path))[0]
        cfg.graph.dir = os.path.join(ROOT, "runs/step_profile", name, "graph")
        if not os.path.exists(os.path.join(cfg.graph_dir, "manifest.json")):
            from tbg.importer import import_graph

            import_graph(cfg, overwrite=False, progress=False)
    return cfg


def profile_steps(cfg, steps: int) -> dict[str, object]:  # noqa: ANN001
    """Per-step op counts of ``cfg``'s training step (first bucket), as printed by this tool."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tbg.train.edge_stream import batches
    from tbg.train.trainer import Trainer

    torch.set_num_threads(1)
    trainer = Trainer(cfg, progress=False)
    trainer.start(fresh=True)
    bucket = next((i, j) for i in range(trainer.grid[0]) for j in range(trainer.grid[1]) if trainer.edges.count((i, j)))
    trainer.bucket = bucket
    trainer.store.need(trainer.bucket_keys(bucket))
    size = cfg.train_data.per_replica_batch_size
    work = []
    warm = 3
    for chunk in trainer.edges.chunks(0, bucket, 0):
        work += [b for _, b in batches(chunk, size, chunk.start) if len(b) == size]
        if len(work) >= warm + 3 * steps:
            break
    if len(work) < warm + 3 * steps:
        raise SystemExit(f"step_profile: the first bucket has fewer than {warm + 3 * steps} full batches")
    for b in work[:warm]:
        trainer.train_step(b)
    runs = []
    offset = warm
    for n in (steps, 2 * steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in work[offset : offset + n]:
                trainer.train_step(b)
        offset += n
        runs.append(_counts(prof.events()))
    (n1, t1), (n2, t2) = runs

    def per_step(a: Counter, b: Counter) -> dict[str, float]:
        return {k: (b[k] - a[k]) / steps for k in sorted(set(a) | set(b)) if b[k] != a[k]}

    nested, top = per_step(n1, n2), per_step(t1, t2)
    sync = {k: v for k, v in nested.items() if k in SYNC_OPS}
    return {
        "config": None,
        "batch_size": size,
        "steps": steps,
        "aten_ops_per_step": {"nested": round(sum(nested.values()), 1), "top_level": round(sum(top.values()), 1)},
        "sync_ops_per_step": round(sum(sync.values()), 1),
        "sync_ops": sync,
        "top_level_ops": dict(sorted(top.items(), key=lambda kv: -kv[1])),
        "nested_ops": dict(sorted(nested.items(), key=lambda kv: -kv[1])),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    cfg = _config(args.config, args.overrides)
    out = profile_steps(cfg, args.steps)
    out["config"] = args.config
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

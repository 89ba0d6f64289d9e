"""`tbg train CONFIG`: train (or resume) into training.save_dir.  No torch import at module level."""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fresh", action="store_true", help="ignore and delete existing checkpoints/metrics in save_dir; start over"
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar (metrics.jsonl is always written)")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")


def passive_omp_wait() -> None:
    """OpenMP threads sleep instead of spinning at barriers (must be set before torch loads libgomp).

    Measured on the 2-core machine while other processes used the CPUs: a WordNet step with 2 spinning
    threads took 640 ms, with passive waiting 37 ms (1 thread: 35 ms).  An explicit setting wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(args: argparse.Namespace) -> int:
    passive_omp_wait()
    from tbg.config import load_config
    from tbg.train.trainer import Trainer

    cfg = load_config(args.config)
    trainer = Trainer(cfg, progress=not args.no_progress)
    how = trainer.start(fresh=args.fresh)
    if trainer.finished():
        step = trainer.state["step"]
        print(f"tbg train: already finished (step {step}, epoch {trainer.state['epoch']}) in "
              f"{cfg.training.save_dir}; nothing to do (use --fresh to retrain)", file=sys.stderr)  # fmt: skip
        return 0
    print(f"tbg train: {how}; device {trainer.device}, bf16 matmuls {trainer.bf16}", file=sys.stderr)
    summary = trainer.run()
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"tbg train: done: step {summary['step']}, {summary['edges']:,} edges in {summary['wall_s']:.1f} s"
            f" ({summary['edges_per_s']:,.0f} edges/s), loss {summary['final_loss']}",
            file=sys.stderr,
        )
    return 0

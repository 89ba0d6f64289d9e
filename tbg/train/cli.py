"""`tbg train CONFIG`: train (or resume) into training.save_dir.  No torch import at module level."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from tbg.locking import DirectoryLock, exclusive, reading

if TYPE_CHECKING:
    from tbg.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fresh", action="store_true", help="ignore and delete existing checkpoints/metrics in save_dir; start over"
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar (metrics.jsonl is always written)")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    parser.add_argument(
        "--allow-optimizer-change",
        action="store_true",
        help="resume although an optimizer (kind, lr, schedule) differs from the checkpoint's; state of the same"
        " kind is kept, a new kind starts from zero",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="run N trainers on this machine: the same command under `torchrun --standalone --nproc-per-node N`"
        " (docs/distributed.md)",
    )


def bounded_omp_spin() -> None:
    """OpenMP threads spin briefly at barriers, then sleep (must be set before torch loads libgomp).

    libgomp's default long spin is fastest on an idle machine but very slow when other processes compete for
    the cores, and passive waiting is slow on an idle one; a 10k spin count keeps most of the idle speed and
    stays sane under contention (docs/benchmarks.md).
    Explicit OMP_WAIT_POLICY / GOMP_SPINCOUNT settings win.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")


KERNEL_CACHE_CAPACITY = "64"


def bounded_kernel_caches() -> None:
    """Bound oneDNN's primitive cache and ideep's LRU cache (default 1024 entries each) to 64 entries.

    CPU bf16 products run through oneDNN, which compiles and caches a kernel per operand shape; a partitioned
    run's last batch of every bucket has a shape of its own, so with the defaults peak RSS grew by ~0.7 MiB per
    bucket until 1024 shapes were cached (docs/memory.md).  Read when the first such product runs, so setting
    them here (before training starts) works even when torch is already imported.  Explicit settings win.
    """
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, KERNEL_CACHE_CAPACITY)


def train(
    cfg: Config,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    allow_optimizer_change: bool = False,
) -> dict:
    """Train (or resume) ``cfg`` into ``training.save_dir`` and return the run summary (``tbg train``, ``tbg.train``).

    A run that already finished trains nothing: its summary has ``already_finished: true`` and zero steps.
    ``log`` receives the one-line start notes (how the run starts, device and threads).
    """
    bounded_omp_spin()
    bounded_kernel_caches()
    from tbg.distributed.env import dist_env
    from tbg.errors import storage_errors

    save_dir = cfg.training.save_dir
    env = dist_env()
    with storage_errors(save_dir, "the checkpoint being written was discarded (checkpoints/latest unchanged)"):
        if env is not None:  # one of several trainers launched by torchrun (tbg/distributed/)
            from tbg.distributed.run import train_distributed

            with reading(cfg.graph_dir):  # (each trainer reads the graph dir: no import --overwrite under it)
                return train_distributed(cfg, env, fresh, progress, log, allow_optimizer_change)
        # the save_dir's writer, and a reader of the graph dir (no `tbg import --overwrite` under the run)
        with exclusive_save_dir(save_dir), reading(cfg.graph_dir):
            return _train(cfg, fresh, progress, log, allow_optimizer_change)


def exclusive_save_dir(save_dir: str) -> DirectoryLock:
    """The save_dir's writer lock for a whole run; what a killed run left inside is removed once it is held."""
    from tbg.checkpoint import CheckpointStore
    from tbg.train.metrics_log import remove_metrics_leftovers
    from tbg.train.partition_store import SWAP_DIR, remove_swap_leftovers

    lock = exclusive(save_dir, "tbg train").acquire()
    try:
        CheckpointStore(save_dir).remove_leftovers()
        remove_swap_leftovers(os.path.join(save_dir, SWAP_DIR))
        remove_metrics_leftovers(save_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def _train(
    cfg: Config, fresh: bool, progress: bool, log: Callable[[str], None] | None, allow_optimizer_change: bool
) -> dict:
    from tbg.train.trainer import Trainer

    trainer = Trainer(cfg, progress=progress)
    try:
        how = trainer.start(fresh=fresh, allow_optimizer_change=allow_optimizer_change)
        if trainer.finished():
            p = trainer.progress
            return {"already_finished": True, "steps": 0, "step": p.step, "epoch": p.epoch}
        n, each = len(trainer.workers), trainer.threads_per_worker
        where = str(trainer.device)
        if trainer.device.type == "cpu":
            where += f" ({n} Hogwild workers x {each} threads)" if n > 1 else f" ({each} threads)"
        if log is not None:
            log(f"{how}; device {where}, bf16 matmuls {trainer.bf16}")
        return trainer.run()
    finally:
        trainer.close()


def run(args: argparse.Namespace) -> int:
    from tbg.config import load_config

    if args.nproc is not None and "TORCHELASTIC_RUN_ID" not in os.environ:
        if args.nproc < 1:
            from tbg.errors import TbgError

            raise TbgError(f"--nproc: expected a number of trainers >= 1, got {args.nproc}")
        load_config(args.config, args.overrides)  # a bad config is one line here, not one per trainer
        from tbg.distributed.run import launch

        flags = [f"--set={o}" for o in args.overrides]
        flags += [f for f, on in (("--fresh", args.fresh), ("--no-progress", args.no_progress), ("--json", args.json),
                                  ("--allow-optimizer-change", args.allow_optimizer_change)) if on]  # fmt: skip
        return launch(args.config, flags, args.nproc)

    cfg = load_config(args.config, args.overrides)
    summary = train(
        cfg,
        fresh=args.fresh,
        progress=not args.no_progress,
        log=_note,
        allow_optimizer_change=args.allow_optimizer_change,
    )
    rank = os.environ.get("RANK") if os.environ.get("WORLD_SIZE", "1") != "1" else None
    if summary.get("already_finished"):
        if rank not in (None, "0"):
            return 0
        _note(f"already finished (step {summary['step']}, epoch {summary['epoch']}) in {cfg.training.save_dir};"
              " nothing to do (use --fresh to retrain)")  # fmt: skip
        return 0
    if rank not in (None, "0"):
        return 0  # (rank 0 speaks for the run)
    if args.json:
        from tbg.run_files import json_line

        print(json_line(summary))
    else:
        _note(
            f"done: step {summary['step']}, {summary['edges']:,} edges in {summary['wall_s']:.1f} s"
            f" ({summary['edges_per_s']:,.0f} edges/s), loss {summary['final_loss']}"
        )
    if cfg.training.report:
        from tbg.run_report import report_run

        report_run(cfg.training.save_dir, prog="tbg train")
    return 0


def _note(line: str) -> None:
    print(f"tbg train: {line}", file=sys.stderr)

"""`tbg train` under torchrun: the trainer's life around :class:`DistributedTrainer`, and ``--nproc``.

Rank 0 holds the save_dir's writer lock (tbg/locking.py) for the whole run and cleans what a killed run
left; the other trainers write only files whose partitions they lease, so one lock per run (not per trainer)
keeps the rule "one writer per dir": a second *run* on the save_dir is refused by rank 0, and its other
trainers stop because rank 0 failed.  Any failure is published to the peers (they stop at their next wait
with one line naming it); SIGTERM from the launcher after a peer died becomes one line naming the lost rank.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tbg.config import Config
from tbg.distributed.env import DistEnv, DistributedError

_COLLECTIVE = re.compile(r"gloo|nccl|connection|socket|peer|timed out|timeout", re.IGNORECASE)


def settings(cfg: Config) -> tuple[float, float]:
    """(timeout_s, heartbeat_s) of ``runtime.distributed``."""
    section = cfg.runtime.distributed
    return float(section.timeout_s), float(section.heartbeat_s)


def train_distributed(
    cfg: Config,
    env: DistEnv,
    fresh: bool,
    progress: bool,
    log: Callable[[str], None] | None,
    allow_optimizer_change: bool,
) -> dict[str, Any]:
    import torch.distributed as dist

    from tbg.distributed.leases import Coordinator
    from tbg.distributed.trainer import DistributedTrainer, init_process_group

    timeout_s, heartbeat_s = settings(cfg)
    coord = Coordinator(env, timeout_s, heartbeat_s)
    lock = None
    try:
        if env.rank == 0:
            from tbg.remote_save_dir import cache_dir, is_url
            from tbg.train.cli import exclusive_save_dir

            save_dir = cfg.training.save_dir
            lock = exclusive_save_dir(cache_dir(save_dir, 0) if is_url(save_dir) else save_dir)
        trainer = DistributedTrainer(cfg, env, coord, progress=progress)
        init_process_group(env, trainer.device, timeout_s)
        how = trainer.start(fresh=fresh and env.rank == 0, allow_optimizer_change=allow_optimizer_change)
        if trainer.finished():
            p = trainer.progress
            return {"already_finished": True, "steps": 0, "step": p.step, "epoch": p.epoch}
        if log is not None and env.rank == 0:
            log(f"{how}; {env.world_size} trainers (attempt {env.attempt}), device {trainer.device}")
        summary = trainer.run()
        coord.barrier("finished")
        return summary
    except BaseException as exc:
        stopping(coord, exc)
        raise
    finally:
        coord.close()
        if dist.is_initialized():
            dist.destroy_process_group()
        if lock is not None:
            lock.release()


def stopping(coord: Any, exc: BaseException) -> None:
    """Tell the peers, then raise one line naming a lost peer when one is why this trainer stops (a collective
    that failed, or the launcher's SIGTERM after a peer died); other errors go on as they are."""
    from tbg.errors import TbgError

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # already stopping: the launcher's SIGTERM adds nothing
    if isinstance(exc, TbgError):
        coord.fail(" ".join(str(exc).split())[:300])
        return
    if not isinstance(exc, KeyboardInterrupt | RuntimeError):
        coord.fail(type(exc).__name__)
        return
    # SIGTERM/SIGINT, or a failed gloo/nccl collective: most likely a peer is gone (give its heartbeat time)
    signalled = isinstance(exc, KeyboardInterrupt)
    if not signalled and not _COLLECTIVE.search(str(exc)):
        coord.fail(" ".join(str(exc).split())[:200])
        return  # a bug keeps its traceback
    deadline = time.monotonic() + min(coord.timeout_s, 3 * coord.heartbeat_s + 2)
    lost = coord.lost_peer()
    while lost is None and not signalled and time.monotonic() < deadline:
        time.sleep(0.2)
        lost = coord.lost_peer()
    coord.fail(lost or ("stopped by a signal" if signalled else " ".join(str(exc).split())[:200]))
    if lost:
        raise DistributedError(lost) from None
    if not signalled:
        problem = " ".join(str(exc).split())[:200]
        raise DistributedError(f"rank {coord.rank}: a collective with the other trainers failed: {problem}") from None


def launch(config: str, argv: list[str], nproc: int) -> int:
    """``tbg train CONFIG --nproc N``: the same command under ``torchrun --standalone --nproc-per-node N``."""
    import subprocess

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    base = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*base, "--standalone", f"--nproc-per-node={nproc}", "-m", "tbg", "train", config, *argv]
    return subprocess.call(cmd)

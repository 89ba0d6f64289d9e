"""Where a trainer stands in a torchrun launch, and its connection to the launcher's c10d store.

torchrun (torch.distributed.elastic) starts every trainer with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT, TORCHELASTIC_RESTART_COUNT and TORCHELASTIC_RUN_ID.  With its c10d rendezvous (and the static
one torchrun uses by default) it sets TORCHELASTIC_USE_AGENT_STORE=True: MASTER_ADDR:MASTER_PORT is then the
TCPStore that the *agent* hosts, not a worker, so a dying trainer never takes the store with it, and the
store outlives a restart of the group.  Every trainer connects to it as a client.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tbg.errors import TbgError


class DistributedError(TbgError):
    """A distributed run cannot go on: a lost trainer, an unreachable store, a wait past its timeout."""


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    attempt: int  # TORCHELASTIC_RESTART_COUNT: 0, then 1.. after each restart of the group
    run_id: str
    agent_store: bool

    @property
    def host(self) -> str:
        return socket.gethostname()


def dist_env(environ: dict[str, str] | None = None) -> DistEnv | None:
    """The launch this process is part of, or None outside torchrun (or in a world of one trainer)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE: expected an integer, got {env['WORLD_SIZE']!r}") from None
    if world <= 1:
        return None
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with torchrun")
    return DistEnv(
        rank=int(env["RANK"]),
        world_size=world,
        local_rank=int(env.get("LOCAL_RANK", "0")),
        master_addr=env["MASTER_ADDR"],
        master_port=int(env["MASTER_PORT"]),
        attempt=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
        run_id=env.get("TORCHELASTIC_RUN_ID", "none"),
        agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
    )


def connect_store(env: DistEnv, timeout_s: float) -> Any:
    """A client of the launcher's store; one line when it cannot be reached within ``timeout_s``."""
    import torch.distributed as dist

    if not env.agent_store:
        raise DistributedError(
            "TORCHELASTIC_USE_AGENT_STORE is not True: tbg keeps its bucket leases in the store torchrun's agent"
            " hosts; launch with torchrun (its default or `--rdzv-backend c10d`)"
        )
    try:
        return dist.TCPStore(env.master_addr, env.master_port, is_master=False, timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, OSError) as exc:  # DistStoreError / DistNetworkError are RuntimeErrors
        problem = " ".join(str(exc).split())[:160]
        raise DistributedError(
            f"rank {env.rank}: cannot reach the torchrun store at {env.master_addr}:{env.master_port} within"
            f" {timeout_s:g} s ({problem})"
        ) from None

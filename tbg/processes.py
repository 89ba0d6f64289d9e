"""Whether a process of this host has ended: the one liveness test for pids that tbg records (temp file
names of a writer, the trainers of a distributed run).  Standard library only (``tbg import`` and ``tbg
export`` use it without torch)."""

from __future__ import annotations

import os


def process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs on this host, or it is a zombie (dead, not yet reaped by its parent,
    e.g. torchrun's agent).  A process of another user counts as running."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        pass  # no /proc (not Linux) or unreadable: ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False

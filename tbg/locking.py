"""One writer per directory: an OS lock on ``<dir>.lock`` beside the directory, held for a whole run.

``tbg train`` locks its save_dir, ``tbg import`` its graph dir, ``tbg export`` its output dir (the CLI and the
Python API alike).  The lock is ``fcntl.flock`` on the lock file, so the kernel drops it when the holder dies:
a killed run never leaves a stale lock, and the next run may treat what it finds as a crashed run's leftovers.
The file lives *beside* the directory because import and export build their dir in a temp dir and rename it
into place (a file inside would move with it).  It records the holder (pid, host, command, start time) for
the one-line error a second writer gets; a cleanly finishing holder removes it.

Readers (eval, export reading a checkpoint, the trainer reading the graph) take no lock: every directory is
published by an atomic rename, so they see the old or the new state, never a half-written one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from glob import escape, glob
from types import TracebackType

from tbg.errors import LockedError

LOCK_SUFFIX = ".lock"
# what an interrupted writer of <dir> can leave beside it: its temp build dir and a replaced dir moved aside
_LEFTOVER_SUFFIXES = (".tmp-*", ".old-*")


def lock_path(directory: str) -> str:
    return os.path.abspath(directory.rstrip("/") or "/") + LOCK_SUFFIX


class DirectoryLock:
    """Exclusive lock on ``directory`` (which need not exist yet); a context manager.

    Two locks on one directory conflict even inside one process (flock locks belong to the open file).
    """

    def __init__(self, directory: str, command: str) -> None:
        self.directory = directory
        self.command = command
        self.path = lock_path(directory)
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read_holder(fd))
                os.close(fd)
                raise LockedError(
                    f"{self.directory}: in use by {holder} (lock {self.path}); wait for it to finish or stop it"
                ) from None
            # the previous holder may have removed the file between our open and flock: then lock the new one
            if _same_file(fd, self.path):
                break
            os.close(fd)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it, so nobody can be waiting on this inode's lock
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def remove_leftovers(self) -> list[str]:
        """Remove ``<dir>.tmp-*`` and ``<dir>.old-*`` beside the directory: only an interrupted run of a
        writer of this directory makes them, and none can be running while we hold the lock."""
        if not self.held:
            raise RuntimeError("remove_leftovers needs the lock")
        base = os.path.abspath(self.directory.rstrip("/"))
        removed = []
        for suffix in _LEFTOVER_SUFFIXES:
            for path in glob(escape(base) + suffix):
                remove_path(path)
                removed.append(path)
        return removed

    def __enter__(self) -> DirectoryLock:
        return self if self.held else self.acquire()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def exclusive(directory: str, command: str | None = None) -> DirectoryLock:
    """``with exclusive(save_dir, "tbg train"):`` — the lock object, acquired on entry."""
    return DirectoryLock(directory, command or " ".join(["tbg", *sys.argv[1:]]))


def remove_path(path: str) -> None:
    """Remove a file, a link or a directory tree (whatever an interrupted run left)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _read_holder(fd: int) -> dict[str, object]:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    if not holder.get("pid"):
        return "another process"
    what = f"`{holder['command']}` " if holder.get("command") else ""
    since = f", since {holder['started']}" if holder.get("started") else ""
    return f"{what}(pid {holder['pid']} on {holder.get('host', '?')}{since})"

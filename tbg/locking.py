"""Who may touch a directory: one writer, or any number of readers; OS locks the kernel drops when a holder dies.

``tbg train`` locks its save_dir, ``tbg import`` its graph dir, ``tbg export`` its output dir (the CLI and the
Python API alike), each exclusively for the whole run.  The lock is ``fcntl.flock`` on ``<dir>.lock``, so a
killed run never leaves a stale lock, and the next run may treat what it finds as a crashed run's leftovers.
The file lives *beside* the directory because import and export build their dir in a temp dir and rename it
into place (a file inside would move with it).  It records the writer (pid, host, command, start time) for
the one-line error a second process gets; the last holder to finish removes it.

Readers lock too, so nothing is replaced or removed while they read it:

- the graph dir: ``tbg train``, ``tbg eval``, ``tbg export`` and queries hold a *shared* lock on it
  (:func:`reading`), so ``tbg import --overwrite`` is refused while they run (and they are refused while an
  import runs), instead of reading files of two imports;
- a checkpoint version: a reader pins the version dir it reads (:class:`VersionPin`, a shared flock on the
  dir itself) and the trainer's pruning skips pinned versions (:func:`remove_unpinned`), so an eval or export
  never loses its checkpoint half-way.  Everything is published by an atomic rename, so a reader sees a
  whole version, never a half-written one.
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
    """Exclusive (a writer) or shared (a reader) lock on ``directory``, which need not exist yet; a context
    manager.  Writers exclude writers and readers; readers exclude only writers.

    Two locks on one directory conflict even inside one process (flock locks belong to the open file).  A
    reader that cannot create the lock file (a read-only location) reads without one: nobody can write there.
    """

    def __init__(self, directory: str, command: str, shared: bool = False) -> None:
        self.directory = directory
        self.command = command
        self.shared = shared
        self.path = lock_path(directory)
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        while True:
            fd = self._open()
            if fd is None:
                return self  # a reader in a place nobody can write to
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe_holders(fd)
                os.close(fd)
                raise LockedError(
                    f"{self.directory}: in use by {holder} (lock {self.path}); wait for it to finish or stop it"
                ) from None
            # the previous holder may have removed the file between our open and flock: then lock the new one
            if _same_file(fd, self.path):
                break
            os.close(fd)
        if not self.shared:  # (readers leave the record alone: several hold the lock at once)
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

    def _open(self) -> int | None:
        if not self.shared:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            pass
        try:
            return os.open(self.path, os.O_RDONLY)
        except OSError:
            return None

    def release(self) -> None:
        """Drop the lock; the last holder removes the lock file (while holding it exclusively, so nobody can be
        left locking a removed file: a process that opened it meanwhile sees it gone and locks the new one)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            last = True
            if self.shared:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    last = False  # other readers still hold it
            if last and _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __del__(self) -> None:
        """A reader's lock dropped without release (a Graph of the Python API) is freed; a writer's lock lives
        until released or until the process ends, whoever still references it."""
        if self.shared:
            try:
                self.release()
            except Exception:  # noqa: BLE001, S110 - nothing to report from a finalizer
                pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def remove_leftovers(self) -> list[str]:
        """Remove ``<dir>.tmp-*`` and ``<dir>.old-*`` beside the directory: only an interrupted run of a
        writer of this directory makes them, and none can be running while we hold the lock."""
        if not self.held or self.shared:
            raise RuntimeError("remove_leftovers needs the writer's lock")
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


def reading(directory: str) -> DirectoryLock:
    """``with reading(graph_dir):`` — a reader's shared lock (train, eval, export and queries read the graph
    dir under it, so ``tbg import --overwrite`` cannot replace it under them), acquired on entry."""
    return DirectoryLock(directory, "reader", shared=True)


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


def _describe_holders(fd: int) -> str:
    """Who holds the lock on ``fd``'s file: the writer's record, else the processes the kernel lists as
    holding it (readers write no record), else "another process"."""
    record = _read_holder(fd)
    holders = lock_holders(fd)
    if record.get("pid") and (holders is None or record["pid"] in holders):
        return _describe(record)
    if holders:
        return ", ".join(_describe_pid(pid, mode) for pid, mode in sorted(holders.items())[:3])
    return "another process"


def lock_holders(fd: int) -> dict[int, str] | None:
    """pid -> "READ"/"WRITE" of the flock holders of ``fd``'s file, from /proc/locks (Linux); None when unknown."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    holders: dict[int, str] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == key and parts[4].isdigit():
            holders[int(parts[4])] = parts[3]
    return holders


def _describe(holder: dict[str, object]) -> str:
    if not holder.get("pid"):
        return "another process"
    what = f"`{holder['command']}` " if holder.get("command") else ""
    since = f", since {holder['started']}" if holder.get("started") else ""
    return f"{what}(pid {holder['pid']} on {holder.get('host', '?')}{since})"


def _describe_pid(pid: int, mode: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        argv = []
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("python"):  # python -m tbg / python .../bin/tbg
        argv = argv[2:] if argv[1] == "-m" else argv[1:] if not argv[1].startswith("-") else argv
    what = f"`{' '.join([os.path.basename(argv[0]), *argv[1:]])[:120]}` " if argv else ""
    role = "reading it" if mode == "READ" else "writing it"
    return f"{what}(pid {pid} on {socket.gethostname()}, {role})"


# ----------------------------------------------------------------------------- checkpoint version pins


class VersionPin:
    """A reader's shared flock on a committed checkpoint version dir (the dir itself: a reader needs no write
    permission), so the trainer's pruning skips that version until the reader is done.

    :meth:`acquire` is False when the dir is gone (pruned between reading ``latest`` and pinning it).  On a
    file system without flock support the reader goes on unpinned, as before pins existed.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a pruner removes this very version
        except OSError:
            os.close(fd)
            return os.path.isdir(self.path)  # no flock here: unpinned
        if not _same_file(fd, self.path):  # removed (or replaced) while we waited
            os.close(fd)
            return False
        self._fd = fd
        return True

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.release()
        except OSError:
            pass


def remove_unpinned(path: str, aside: str) -> bool:
    """Remove the version dir ``path`` unless a reader pins it (then False: a later prune retries).  It is
    renamed to ``aside`` (a ``.tmp-*`` name the save_dir's next writer cleans up) under an exclusive flock,
    so a reader never pins a half-removed version."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            pass  # no flock on this file system: no pins either
        os.rename(path, aside)
        shutil.rmtree(aside, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def pinned_by(path: str) -> str | None:
    """Who pins the version dir ``path`` (for an error that must name the reader); None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = lock_holders(fd) or {}
            return ", ".join(_describe_pid(pid, "READ") for pid in sorted(holders)[:3]) or "another process"
        except OSError:
            return None
        return None
    finally:
        os.close(fd)

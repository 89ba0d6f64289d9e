"""Durable small-file writes: temp + fsync + rename, directory fsyncs, and cleanup of failed writes' temps.

The commit primitive of checkpoint ``latest`` pointers, eval results, metrics, run reports and index-cache
metadata (and the directory fsync of checkpoint and graph commits); no numpy, h5py or torch import."""

from __future__ import annotations

import os
import socket
import uuid

from tbg.processes import process_gone


def fsync_dir(path: str) -> None:
    """Flush a directory's entries (names of files created or renamed in it) to disk; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a small file by temp + fsync + rename, so readers see the old or the new content.  The temp file
    is named after this process (``<path>.tmp-<host>.<pid>-<random>``): one that a killed writer on this host
    left is removed by the next write of ``path`` here (several readers may write one file, e.g. eval results,
    each its own temp; a shared save_dir may be written from several hosts)."""
    _remove_dead_temps(path)
    tmp = f"{path}.tmp-{_WRITER}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


_WRITER = "".join(c if c.isalnum() else "_" for c in socket.gethostname())  # this host, in temp file names


def _remove_dead_temps(path: str) -> None:
    """Remove ``path``'s temp files that a process of this host wrote and that no longer runs."""
    folder, prefix = os.path.dirname(path) or ".", f"{os.path.basename(path)}.tmp-{_WRITER}."
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and process_gone(int(pid)):
            remove_quietly(os.path.join(folder, name))


def remove_quietly(path: str) -> None:
    """Drop a temp file of a failed write (disk full, interrupted); it may not exist."""
    try:
        os.remove(path)
    except OSError:
        pass

"""Writing HDF5 files so that a failing disk is one ordinary ``OSError`` naming the file, never HDF5 noise.

When a write fails inside HDF5 (a full disk, a lost permission), HDF5 cannot close the objects whose close
needs that write: their ids stay open, and every later attempt to free them (h5py's ``__dealloc__``, at any
moment, even at exit) fails again and prints "Exception ignored ... Can't decrement id ref count" tracebacks.
So tbg never lets HDF5 see a failing write.  Files are written through h5py's file-object driver into a
:class:`_LatchingSink`: the first failing write is recorded and from then on writes are accepted without
touching the disk (small ones, HDF5's metadata, are kept in memory so HDF5 can read them back while it
finishes).  HDF5 then closes cleanly, and :func:`create_h5` raises the recorded error with the file's name.
The caller removes the file: every tbg writer writes to a temp path (``*.tmp-*`` or a temp dir) anyway.
HDF5 calls back into Python for every write, so code that drives a writer runs inside
:func:`tbg.interrupts.deferred` (an interrupt raised in a callback would drop a write unseen).

numpy/h5py only (``tbg import`` and ``tbg export`` must not import torch).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h5py

from tbg.interrupts import deferred

_KEEP_WRITE_BYTES = 64 << 10  # after a failure, writes up to this size (metadata) are kept for read-back ...
_KEEP_TOTAL_BYTES = 64 << 20  # ... up to this much in all; larger ones (chunk data) are dropped


class _LatchingSink(io.RawIOBase):
    """An unbuffered binary file that records its first failing write instead of raising it (see module doc)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._fh = open(path, "wb+", buffering=0)  # noqa: SIM115 - closed in close()
        self.error: OSError | None = None
        self._pos = 0
        self._kept: list[tuple[int, bytes]] = []
        self._kept_bytes = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = max(self._fh.seek(0, os.SEEK_END), self._end_of_kept()) + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        if self.error is None:
            try:
                self._fh.seek(self._pos)
                done = 0
                while done < n:
                    done += self._fh.write(view[done:]) or 0
            except OSError as exc:
                self.error = exc
        if self.error is not None and n <= _KEEP_WRITE_BYTES and self._kept_bytes + n <= _KEEP_TOTAL_BYTES:
            self._kept.append((self._pos, bytes(view)))
            self._kept_bytes += n
        self._pos += n
        return n

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        self._fh.seek(self._pos)
        got = self._fh.readinto(view) or 0
        view[got:] = bytes(len(view) - got)
        end = got
        for offset, data in self._kept:  # later writes win: apply in order
            lo, hi = max(offset, self._pos), min(offset + len(data), self._pos + len(view))
            if lo < hi:
                view[lo - self._pos : hi - self._pos] = data[lo - offset : hi - offset]
                end = max(end, hi - self._pos)
        self._pos += end
        return end

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.error is None:
            try:
                self._fh.truncate(size)
            except OSError as exc:
                self.error = exc
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Close the file, on disk first (fsync) when every write reached it: a file renamed into place
        after this survives a crash with its content."""
        if not self.closed:
            try:
                if self.error is None:
                    os.fsync(self._fh.fileno())
                self._fh.close()
            except OSError as exc:
                self.error = self.error or exc
        super().close()

    def _end_of_kept(self) -> int:
        return max((offset + len(data) for offset, data in self._kept), default=0)

    def raise_error(self) -> None:
        """Raise the recorded failure as an ``OSError`` naming the file (errno kept), if there was one."""
        if self.error is not None:
            code = self.error.errno
            reason = self.error.strerror or (os.strerror(code) if code else str(self.error))
            raise OSError(code, reason, self.path) from None


class H5Writer:
    """An HDF5 file being written at ``path`` (``.file`` is the h5py File); :meth:`close` finishes it and
    raises the first failed write as an ``OSError`` naming ``path``; :meth:`abort` closes it quietly.
    Callers use ``.file`` inside :func:`tbg.interrupts.deferred` (see module doc)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sink = _LatchingSink(path)
        try:
            with deferred():
                self.file = h5py.File(self._sink, "w")
        except BaseException:
            self._sink.close()
            raise

    def close(self) -> None:
        with deferred():
            try:
                self.file.close()
            finally:
                self._sink.close()
        self._sink.raise_error()

    def abort(self) -> None:
        """Close after a failure; raise the recorded disk error instead when there is one (the root cause of
        whatever HDF5 raised after writes stopped reaching the disk)."""
        with deferred():
            try:
                self.file.close()
            except Exception:  # noqa: BLE001 - the recorded OSError (or the caller's exception) says what happened
                pass
            self._sink.close()
        self._sink.raise_error()


@contextmanager
def create_h5(path: str) -> Iterator[h5py.File]:
    """``with create_h5(tmp) as f:`` like ``h5py.File(tmp, "w")``, but a failing disk is one ``OSError`` naming
    ``tmp`` (raised at the end of the block, or instead of the error HDF5 raised inside it).  The block runs
    inside :func:`tbg.interrupts.deferred`: an interrupt is raised after the file is closed."""
    with deferred():
        writer = H5Writer(path)
        try:
            yield writer.file
        except Exception:
            writer.abort()
            raise
        except BaseException:  # an interrupt: stop quietly, the interrupt says what happened
            try:
                writer.abort()
            except OSError:
                pass
            raise
        writer.close()

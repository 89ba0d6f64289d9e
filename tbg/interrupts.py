"""SIGINT and SIGTERM while a tbg command runs: raised in the main thread like Ctrl-C, never lost, never inside
an HDF5 write.

Python runs a signal handler between two bytecodes of the main thread, wherever it is.  Two places there
cannot take an exception: HDF5 calling back into Python (tbg writes HDF5 through a file object, see
tbg/h5write.py; an exception raised there drops one write and leaves a file that looks complete), and
finalizers (``__del__``, h5py's dealloc), where Python prints "Exception ignored" and goes on as if the
interrupt never came.  So:

- code that drives an HDF5 writer runs inside :func:`deferred`; an interrupt that arrives there is raised
  when the outermost deferred block ends, after the file was written or closed whole;
- every interrupt is also remembered until the command ends: long loops call :func:`check` (one global read),
  and a command that returns normally after a swallowed interrupt still stops as interrupted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every command unwinds the same way (temp dirs removed, locks released)."""


_KINDS: dict[int, type[KeyboardInterrupt]] = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}
_local = threading.local()  # .depth: how many deferred blocks this thread is inside
_requested: type[KeyboardInterrupt] | None = None  # the first interrupt of the running command
_deferred: type[KeyboardInterrupt] | None = None  # one that arrived inside a deferred block, not raised yet


def _handle(signum: int, frame: object) -> None:
    global _requested, _deferred
    kind = _KINDS[signum]
    _requested = _requested or kind
    if getattr(_local, "depth", 0):
        _deferred = _deferred or kind
        return
    raise kind()


@contextmanager
def handled() -> Iterator[None]:
    """While a command runs (main thread only: no other thread can install handlers), SIGINT raises
    ``KeyboardInterrupt`` and SIGTERM :class:`Terminated`, both honouring :func:`deferred`; an interrupt that
    was swallowed somewhere is raised when the block ends normally."""
    global _requested, _deferred
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in _KINDS}
    _requested = _deferred = None
    try:
        yield
        check()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _requested = _deferred = None


@contextmanager
def deferred() -> Iterator[None]:
    """Interrupts arriving in this block are raised when it ends (the outermost one, in the main thread)."""
    global _deferred
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        if _deferred is not None and not _local.depth and threading.current_thread() is threading.main_thread():
            kind, _deferred = _deferred, None
            raise kind()


def check() -> None:
    """Raise the running command's interrupt if one came (say, in a finalizer that swallowed it)."""
    if _requested is not None and threading.current_thread() is threading.main_thread():
        raise _requested()

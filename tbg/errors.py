"""The one error tree: every error tbg reports to a user, each rendered as one line naming the file/row/field.

The CLI catches :class:`TbgError` once and prints it (exit 2); anything else is a bug and keeps its traceback.
A failing file system (disk full, no permission, read-only, a path below a file) is a bad environment, not a
bug: :func:`storage_errors` and the CLI turn it into one :class:`StorageError` line naming the file.
"""

from __future__ import annotations

import errno as _errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager


class TbgError(Exception):
    """Base of every error the CLI prints as a one-line message instead of a traceback."""


class ConfigError(TbgError, ValueError):
    """An invalid config: the message names the file and the dotted key (a ValueError for callers that parse)."""


class InputError(TbgError):
    """Bad source data: malformed rows, unknown relations/entities, ids out of range, NaN weights."""


class GraphError(TbgError):
    """A missing, incomplete or unreadable graph dir."""


class CheckpointError(TbgError):
    """A missing, corrupt or unreadable checkpoint."""


class ConsistencyError(TbgError):
    """A graph dir or checkpoint that does not fit the config (or each other); names the config key and the file."""


class ExportError(TbgError):
    """The export output exists (without --overwrite) or cannot be written."""


class SynthError(TbgError):
    """The sample-graph generator cannot produce what was asked."""


class QueryError(TbgError):
    """A query names an unknown entity type, entity or relation, or asks for an impossible answer."""


class StorageError(TbgError):
    """A file or dir that cannot be written or read: disk full, permission denied, read-only file system, a
    path below a file.  The message names the file (or the dir being written when the OS does not say which)."""


# HDF5 reports the OS error inside its message (h5py raises OSError, or RuntimeError when a close fails)
_HDF5_ERRNO = re.compile(r"errno = (\d+), error message = '([^']*)'")
_HDF5_NAME = re.compile(r"\b(?:file)?name = '([^']*)'")


def storage_problem(exc: BaseException, where: str | None = None, context: str = "") -> str | None:
    """One line for an OS-level failure, ``FILE: reason[; context]``; None when ``exc`` is not one.

    An OS-level failure is an :class:`OSError` with an errno, or an HDF5 error carrying one.  ``where`` names
    the file or dir when the OS does not (``write()`` on a full disk says no file name).
    """
    text = str(exc)
    hdf5 = _HDF5_ERRNO.search(text)
    if hdf5 is not None:
        code, reason = int(hdf5.group(1)), hdf5.group(2)
        named = _HDF5_NAME.search(text)
        path = named.group(1) if named else None
    elif isinstance(exc, OSError) and exc.errno is not None:
        code, reason, path = exc.errno, exc.strerror or os.strerror(exc.errno), exc.filename
    else:
        return None
    path = os.fsdecode(path) if path is not None else where
    if code in (_errno.EEXIST, _errno.ENOTDIR) and path is not None:
        blocker = _non_dir_ancestor(path)
        if blocker is not None:
            reason = "is a file, not a directory" if blocker == os.path.abspath(path) else f"{blocker} is a file"
    line = f"{path or '<unknown path>'}: {reason}" + (f"; {context}" if context else "")
    return " ".join(line.split("\n"))


def _non_dir_ancestor(path: str) -> str | None:
    """The path itself or its nearest existing ancestor, when that is not a directory."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    return None if os.path.isdir(probe) else probe


@contextmanager
def storage_errors(where: str, context: str = "") -> Iterator[None]:
    """Run a block that writes under ``where``; an OS-level failure becomes one :class:`StorageError` line.

    The writers inside build into temp files/dirs and rename them into place, so after the error nothing
    half-written is left where a later command would take it for complete.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        line = storage_problem(exc, where, context)
        if line is None:
            raise
        raise StorageError(line) from None


class LockedError(TbgError):
    """Another process is writing the directory (a second train/import/export); names the holder's pid/host."""


class NonFiniteError(TbgError):
    """A non-finite loss or parameter stopped training (names the step and the table); readers that find
    non-finite values in a checkpoint raise CheckpointError."""

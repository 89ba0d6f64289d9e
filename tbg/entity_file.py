"""Datasets of a graph dir's entity files (``entities/<type>.h5``: ``names``, ``perm``, ``position``), read whole
or as slices, so that a reader of a large type (export) holds one slice at a time.  Every read checks the
dataset's length against the manifest's entity count; string datasets are checked against their SHA-256 (after
the last slice when read in slices).  numpy/h5py only."""

from __future__ import annotations

from collections.abc import Iterator

import h5py
import numpy as np

from tbg.errors import GraphError
from tbg.integrity import StringsDigest


def _read(
    path: str, key: str, count: int, lo: int, hi: int, digest: StringsDigest | None
) -> tuple[np.ndarray, StringsDigest | None]:
    try:
        with h5py.File(path, "r") as f:
            ds = f[key]
            if ds.shape != (count,):
                raise GraphError(f"{path}: dataset {key!r} holds {ds.shape[0]} entities, the manifest says {count}")
            if ds.dtype.kind != "O":
                return ds[lo:hi], None
            digest = digest or StringsDigest(ds)
            return digest.read(ds, lo, hi), digest
    except (OSError, KeyError) as exc:
        raise GraphError(f"{path}: damaged or unreadable entity file: {exc}") from None


def read_rows(path: str, key: str, count: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Rows ``lo:hi`` (default: all) of a numeric dataset, or all of a string one (its checksum checked)."""
    hi = count if hi is None else hi
    values, digest = _read(path, key, count, lo, hi, None)
    if digest is not None:
        if (lo, hi) != (0, count):
            raise ValueError(f"{path}: a slice of the string dataset {key!r} is read through row_blocks")
        digest.check(path, GraphError)
    return values


def row_blocks(path: str, key: str, count: int, rows: int) -> Iterator[np.ndarray]:
    """All rows of a dataset as consecutive slices of at most ``rows``; a string dataset's checksum is checked
    after the last slice (a reader that publishes what it wrote only at its end never publishes damaged
    names)."""
    digest = None
    for lo in range(0, count, rows):
        values, digest = _read(path, key, count, lo, min(count, lo + rows), digest)
        yield values
    if digest is not None:
        digest.check(path, GraphError)

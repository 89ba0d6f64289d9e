"""Checksums for the files tbg commits (graph dirs, checkpoints): written with the data, checked when read.

- HDF5 datasets are chunked with the fletcher32 filter: HDF5 checks each chunk as it reads it, so a damaged
  byte anywhere in a dataset's data is a read error (``OSError``), never a wrong number.
- Small files (JSON, YAML, torch state) are covered by SHA-256 digests recorded by the committing step, and
  each file is listed with its size, so a missing or truncated file is found before anything is read.
- The committing JSON file itself (manifest.json, progress.json) carries a SHA-256 of its own content.

numpy/h5py/hashlib only (``tbg import`` and ``tbg export`` must not import torch).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

CHECKSUM_KEY = "checksum"
FILES_KEY = "files"
_CHUNK_BYTES = 1 << 20
_STRINGS_DIGEST = "sha256"  # ~1 MiB chunks: fletcher32 per chunk, reads of a few rows stay cheap


def checked_dataset(group: Any, name: str, data: np.ndarray | None = None, **kw: Any) -> Any:
    """``group.create_dataset`` with a checksum: numeric data chunked with the fletcher32 filter (HDF5 checks
    each chunk on read); variable-length strings (which HDF5 cannot filter) with a SHA-256 attribute that
    :class:`StringsDigest` checks.  Empty datasets stay contiguous (nothing to damage).  Arguments as h5py's."""
    shape = tuple(np.shape(data)) if data is not None else tuple(kw["shape"])
    dtype = np.dtype(kw["dtype"] if "dtype" in kw else data.dtype)  # type: ignore[union-attr]
    if dtype.kind == "O":
        ds = group.create_dataset(name, data=data, **kw)
        ds.attrs[_STRINGS_DIGEST] = _strings_digest(np.asarray(data, dtype=object))
        return ds
    if "chunks" not in kw and shape and all(shape):
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        kw["chunks"] = (max(1, min(shape[0], _CHUNK_BYTES // max(1, row))), *shape[1:])
    if kw.get("chunks"):
        kw["fletcher32"] = True
    return group.create_dataset(name, data=data, **kw)


class StringsDigest:
    """The SHA-256 of a string dataset of :func:`checked_dataset`, taken over its slices read in order (so a
    reader holds one slice at a time) and checked after the last one."""

    def __init__(self, ds: Any) -> None:
        want = ds.attrs.get(_STRINGS_DIGEST)
        self.want = want.decode() if isinstance(want, bytes) else want
        self.hash = hashlib.sha256()
        self.name = ds.name
        self.rows = 0

    def read(self, ds: Any, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (the next ones: ``lo`` is where the last read ended) as an object array of str."""
        if lo != self.rows:
            raise ValueError(f"strings read out of order: rows {lo}.. after {self.rows}")
        values = np.asarray(ds.asstr()[lo:hi], dtype=object)
        if self.want is not None and len(values):
            self.hash.update((b"\0" if self.rows else b"") + _strings_bytes(values))
        self.rows = hi
        return values

    def check(self, path: str, error: type[Exception]) -> None:
        """Raise ``error`` unless the rows read so far hash to the digest written with the dataset."""
        if self.want is not None and self.hash.hexdigest() != self.want:
            raise error(f"{path}: damaged dataset {self.name!r} (its SHA-256 differs from the one written with it)")


def _strings_bytes(values: np.ndarray) -> bytes:
    items = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]
    return "\0".join(items).encode("utf-8", "surrogatepass")


def _strings_digest(values: np.ndarray) -> str:
    return hashlib.sha256(_strings_bytes(values)).hexdigest()


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def list_files(root: str, digest: Callable[[str], bool], skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` (relative POSIX path -> size, plus sha256 where ``digest(name)``)."""
    out: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel in skip:
                continue
            entry: dict[str, Any] = {"size": os.path.getsize(path)}
            if digest(name):
                entry["sha256"] = file_digest(path)
            out[rel] = entry
    return out


def verify_files(root: str, files: dict[str, dict[str, Any]], listed_in: str, error: type[Exception]) -> None:
    """Each listed file exists with its recorded size (and digest): else one line naming the file."""
    for rel, entry in files.items():
        path = os.path.join(root, *rel.split("/"))
        try:
            size = os.path.getsize(path)
        except OSError:
            raise error(f"{path}: missing (listed in {listed_in})") from None
        if size != entry.get("size", size):
            raise error(f"{path}: {size} bytes, {listed_in} recorded {entry['size']} (truncated or replaced)")
        if "sha256" in entry and file_digest(path) != entry["sha256"]:
            raise error(f"{path}: damaged (its SHA-256 differs from the one {listed_in} recorded)")


def with_checksum(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` plus ``checksum``: the SHA-256 of its canonical JSON (sorted keys, without the checksum)."""
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    return {**body, CHECKSUM_KEY: _json_digest(body)}


def check_checksum(obj: dict[str, Any], path: str, error: type[Exception]) -> None:
    """A JSON object written by :func:`with_checksum` is unchanged (objects without one are older formats)."""
    if CHECKSUM_KEY not in obj:
        return
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    if _json_digest(body) != obj[CHECKSUM_KEY]:
        raise error(f"{path}: damaged or edited (its content no longer matches its checksum)")


def load_json(path: str, error: type[Exception], what: str) -> dict[str, Any]:
    """A committed JSON object, its checksum checked; unreadable, non-UTF-8 or not an object: one line."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise error(f"{path}: unreadable {what}: {exc}") from None
    if not isinstance(obj, dict):
        raise error(f"{path}: unreadable {what}: not a JSON object")
    check_checksum(obj, path, error)
    return obj


def _json_digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

"""Versioned, crash-safe checkpoints (format in docs/checkpoint-format.md).

    save_dir/checkpoints/
      v<version:010d>/                     one committed version, never modified after commit
        embeddings/<type>_<part>.h5        "embeddings" [rows, dim]; "optimizer/<name>" state arrays
        relations.h5                       relation operator parameters by state-dict name
        state.pt                           the relation optimizer's state (torch.save; the trainer's own)
        config.yaml                        the config that trained it
        progress.json                      version, step, epoch, bucket_index, edges_seen, finished, ...
      latest                               name of the newest committed version (replaced atomically)

A version is built in ``.tmp-v…`` and renamed into place, then ``latest`` is replaced by rename: a crash at
any moment leaves the previous ``latest`` valid.  Readers trust only ``latest`` (or an explicit version dir),
never a directory listing.  ``latest`` says ``none`` until the first commit, so a missing, empty, unreadable
or dangling ``latest`` is an error, never "no checkpoint" (which would start fresh over committed work).
Every file is verified when read (tbg/integrity.py): progress.json carries its own checksum and lists each
file with its size (small files with a SHA-256), HDF5 datasets carry fletcher32.  Version 1 checkpoints
(no checksums) stay readable.  Readers (eval, export, ``tbg.load``, a warm start) pin the version they read
(:func:`open_checkpoint`, :func:`resolve_checkpoint`; tbg/locking.py) and pruning skips pinned versions, so a
version never disappears under its reader.  HDF5 files are written through tbg/h5write.py (a full disk is one
``OSError`` naming the file).  This module is numpy/h5py only, so export does not pay for ``import torch``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from tbg.durable_files import atomic_write_text, fsync_dir, remove_quietly
from tbg.errors import CheckpointError, LockedError
from tbg.h5write import create_h5
from tbg.integrity import FILES_KEY, checked_dataset, list_files, load_json, verify_files, with_checksum
from tbg.locking import VersionPin, pinned_by, remove_unpinned

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CHECKPOINTS = "checkpoints"
LATEST = "latest"
NO_VERSION = "none"  # what ``latest`` says before the first commit
PROGRESS = "progress.json"
_PIN_ATTEMPTS = 100  # a reader re-reads `latest` when the version it named was pruned before it was pinned


def version_name(version: int) -> str:
    return f"v{version:010d}"


def write_embedding_file(
    path: str, embeddings: np.ndarray, optimizer_state: dict[str, np.ndarray] | None = None
) -> None:
    """One partition's table + optimizer state, written to ``path`` (temp + rename).

    A write that cannot fit the free space is refused before HDF5 starts it: HDF5 reports a full disk met
    while it flushes a dataset's chunks only as printed tracebacks, and may leave a truncated file."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    need = embeddings.nbytes + sum(np.asarray(a).nbytes for a in (optimizer_state or {}).values())
    need += need // 50 + (256 << 10)  # chunk checksums, object headers, the superblock
    if shutil.disk_usage(os.path.dirname(os.path.abspath(tmp))).free < need:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
    try:
        with create_h5(tmp) as f:
            f.attrs["format_version"] = FORMAT_VERSION
            checked_dataset(f, "embeddings", embeddings)
            for name, arr in (optimizer_state or {}).items():
                checked_dataset(f, f"optimizer/{name}", np.asarray(arr))
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def read_embedding_file(
    path: str, with_optimizer: bool = False, alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A partition's table and (``with_optimizer``) optimizer state; ``alloc(shape, dtype)`` gives the arrays
    they are read into (e.g. huge-page buffers), so nothing is held twice."""
    try:
        with h5py.File(path, "r") as f:
            emb = _read(f["embeddings"], alloc)
            state = (
                {name: _read(f["optimizer"][name], alloc) for name in f.get("optimizer", {})} if with_optimizer else {}
            )
    except (OSError, KeyError) as exc:
        raise CheckpointError(f"{path}: damaged or unreadable embedding shard: {exc}") from None
    return emb, state


def _read(ds: Any, alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None) -> np.ndarray:
    if alloc is None or ds.size == 0:
        return ds[...]
    out = alloc(tuple(ds.shape), ds.dtype)
    ds.read_direct(out)
    return out


class CheckpointWriter:
    """Collects one version in a temp dir; :meth:`commit` publishes it atomically."""

    def __init__(self, store: CheckpointStore, version: int) -> None:
        self.store = store
        self.version = version
        self.tmp = os.path.join(store.root, f".tmp-{version_name(version)}-{uuid.uuid4().hex[:8]}")
        os.makedirs(os.path.join(self.tmp, "embeddings"))

    def embedding_path(self, etype: str, part: int) -> str:
        return os.path.join(self.tmp, "embeddings", f"{etype}_{part}.h5")

    def write_embeddings(
        self, etype: str, part: int, embeddings: np.ndarray, optimizer_state: dict[str, np.ndarray] | None = None
    ) -> None:
        write_embedding_file(self.embedding_path(etype, part), embeddings, optimizer_state)

    def link_embeddings(self, etype: str, part: int, source: str) -> None:
        """Reuse an immutable shard file (hard link when possible, else copy)."""
        dest = self.embedding_path(etype, part)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
            with open(dest, "rb+") as fh:
                os.fsync(fh.fileno())

    def write_relations(self, params: dict[str, np.ndarray]) -> None:
        with create_h5(os.path.join(self.tmp, "relations.h5")) as f:
            for name, arr in params.items():
                checked_dataset(f, name, np.asarray(arr))

    def write_file(self, name: str, data: bytes | str) -> None:
        path = os.path.join(self.tmp, name)
        try:
            with open(path, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.filename is None:  # write() on a full disk names no file
                raise OSError(exc.errno, exc.strerror, path) from None
            raise

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def commit(self, progress: dict[str, Any]) -> str:
        """Publish: write progress, rename into place, move ``latest``, prune old versions."""
        progress = {"format_version": FORMAT_VERSION, "version": self.version, "time": time.time(), **progress}
        progress[FILES_KEY] = list_files(self.tmp, digest=lambda name: not name.endswith(".h5"), skip=(PROGRESS,))
        self.write_file(PROGRESS, json.dumps(with_checksum(progress), indent=1, sort_keys=True))
        final = os.path.join(self.store.root, version_name(self.version))
        if os.path.exists(final):  # a crashed run may have committed this version number without `latest`
            shutil.rmtree(final)
        for folder in (os.path.join(self.tmp, "embeddings"), self.tmp):  # its files are fsynced as written
            fsync_dir(folder)
        os.replace(self.tmp, final)
        fsync_dir(self.store.root)
        atomic_write_text(os.path.join(self.store.root, LATEST), version_name(self.version) + "\n")
        self.store.prune()
        return final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class Checkpoint:
    """A committed version (read-only).  ``pin``: a reader's :class:`~tbg.locking.VersionPin` on it, held until
    :meth:`release` (or until the object is dropped), so the trainer's pruning leaves the version alone."""

    def __init__(self, path: str, pin: VersionPin | None = None) -> None:
        self.path = path
        self.pin = pin
        progress_path = os.path.join(path, PROGRESS)
        try:
            self.progress: dict[str, Any] = load_json(progress_path, CheckpointError, "progress")
        except FileNotFoundError:
            raise CheckpointError(f"{path}: not a committed checkpoint (no {PROGRESS})") from None
        version = self.progress.get("format_version")
        if version not in READABLE_VERSIONS:
            raise CheckpointError(f"{progress_path}: format_version {version!r}, this tbg reads {READABLE_VERSIONS}")
        try:
            self.version = int(self.progress["version"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{progress_path}: no valid 'version'") from None
        verify_files(path, self.progress.get(FILES_KEY, {}), progress_path, CheckpointError)
        self.name = os.path.basename(os.path.normpath(path))

    def counters(self, keys: list[str]) -> dict[str, int]:
        """Integer progress fields (version, and where training resumes: step, epoch, bucket_index, position,
        edges_seen); a missing or non-integer one is a :class:`CheckpointError` naming progress.json."""
        path = os.path.join(self.path, "progress.json")
        out = {}
        for key in keys:
            if key not in self.progress:
                raise CheckpointError(f"{path}: missing key {key!r}")
            value = self.progress[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CheckpointError(f"{path}: {key}: expected an integer >= 0, got {value!r:.40}")
            out[key] = value
        return out

    def embedding_path(self, etype: str, part: int) -> str:
        return os.path.join(self.path, "embeddings", f"{etype}_{part}.h5")

    def has_embeddings(self, etype: str, part: int) -> bool:
        return os.path.isfile(self.embedding_path(etype, part))

    def embeddings(self, etype: str, part: int) -> np.ndarray:
        path = self.embedding_path(etype, part)
        if not os.path.isfile(path):
            raise CheckpointError(f"{self.path}: no embeddings for entity type {etype!r} partition {part}")
        emb = read_embedding_file(path)[0]
        require_finite(emb, path)
        return emb

    def optimizer_state(self, etype: str, part: int) -> dict[str, np.ndarray]:
        return read_embedding_file(self.embedding_path(etype, part), with_optimizer=True)[1]

    def relations(self) -> dict[str, np.ndarray]:
        path = os.path.join(self.path, "relations.h5")
        try:
            with h5py.File(path, "r") as f:
                params = {name: f[name][...] for name in f}
        except (OSError, KeyError) as exc:
            raise CheckpointError(f"{path}: damaged or unreadable relation parameters: {exc}") from None
        for name, arr in params.items():
            if arr.size:
                require_finite(arr, f"{path} ({name})")
        return params

    def config_text(self) -> str:
        """The config.yaml it was trained with (FileNotFoundError for checkpoints written without one)."""
        path = os.path.join(self.path, "config.yaml")
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{path}: unreadable: not UTF-8 text ({exc.reason} at byte {exc.start})") from None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def release(self) -> None:
        """Unpin the version (a reader is done with it); reading it afterwards is not protected."""
        if self.pin is not None:
            self.pin.release()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CheckpointStore:
    """The ``checkpoints/`` dir of a save_dir: versions, the ``latest`` pointer, pruning."""

    def __init__(self, save_dir: str, max_to_keep: int | None = None) -> None:
        self.save_dir = save_dir
        self.root = os.path.join(save_dir, CHECKPOINTS)
        self.max_to_keep = max_to_keep

    def latest_name(self) -> str | None:
        """The committed version ``latest`` names; None only when nothing was ever committed.

        A missing ``latest`` beside committed versions, an unreadable one, or one naming a version that is not
        there is an error: treating it as "no checkpoint" would start fresh over committed work.
        """
        path = os.path.join(self.root, LATEST)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            committed = [v for v in self.versions() if os.path.isfile(os.path.join(self.root, v, PROGRESS))]
            if committed:
                raise CheckpointError(
                    f"{path}: missing, but committed versions exist ({committed[-1]} the newest); restore it"
                    f" (e.g. echo {committed[-1]} > {path}) or start over with `tbg train --fresh`"
                ) from None
            return None
        except OSError as exc:
            raise CheckpointError(f"{path}: unreadable: {exc}") from None
        try:
            name = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            name = ""
        if name == NO_VERSION:
            return None  # (a version renamed into place by a run killed before it moved `latest` is not committed)
        if not name.startswith("v") or not name[1:].isdigit():
            raise CheckpointError(f"{path}: damaged (expected a version name such as v0000000001, got {raw[:40]!r})")
        if not os.path.isdir(os.path.join(self.root, name)):
            raise CheckpointError(f"{path}: names {name}, which is not in {self.root} (deleted?)")
        return name

    def latest(self, pin: bool = False) -> Checkpoint | None:
        """The latest committed version; ``pin`` (readers): pinned against pruning (see :func:`pinned`)."""
        if not pin:
            name = self.latest_name()
            return Checkpoint(os.path.join(self.root, name)) if name else None
        for _ in range(_PIN_ATTEMPTS):
            try:
                name = self.latest_name()
            except CheckpointError:
                if self._latest_moved():
                    continue  # `latest` named a version that a commit and its pruning have since replaced
                raise
            if name is None:
                return None
            ckpt = pinned(os.path.join(self.root, name))
            if ckpt is not None:
                return ckpt
        raise CheckpointError(f"{self.root}: `latest` keeps moving past the versions it names; try again")

    def _latest_moved(self) -> bool:
        try:
            with open(os.path.join(self.root, LATEST), "rb") as fh:
                name = fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return False
        return name.startswith("v") and os.path.isdir(os.path.join(self.root, name))

    def require_latest(self, pin: bool = False) -> Checkpoint:
        ckpt = self.latest(pin)
        if ckpt is None:
            raise CheckpointError(f"{self.root}: no committed checkpoint; run `tbg train` first")
        return ckpt

    def begin(self, version: int) -> CheckpointWriter:
        os.makedirs(self.root, exist_ok=True)
        if not os.path.exists(os.path.join(self.root, LATEST)):  # before the first version can appear
            atomic_write_text(os.path.join(self.root, LATEST), NO_VERSION + "\n")
        return CheckpointWriter(self, version)

    def versions(self) -> list[str]:
        if not os.path.isdir(self.root):
            return []
        return sorted(n for n in os.listdir(self.root) if n.startswith("v") and n[1:].isdigit())

    def remove_leftovers(self) -> None:
        """Remove what interrupted writes left (``.tmp-v…`` dirs, ``latest.tmp-…``); only the save_dir's lock
        holder may call this, since a running writer's temp dir looks the same."""
        if not os.path.isdir(self.root):
            return
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if name.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True)
            elif name.startswith(f"{LATEST}.tmp-"):
                os.remove(path)

    def prune(self) -> None:
        """Drop old versions beyond ``max_to_keep`` and leftovers of crashed writes; never ``latest``, and
        never a version a reader has pinned (a later prune removes it once the reader is done)."""
        latest = self.latest_name()
        self.remove_leftovers()
        if self.max_to_keep is None:
            return
        keep = [v for v in self.versions() if latest is None or v <= latest][-self.max_to_keep :]
        for name in self.versions():
            if name not in keep and name != latest:
                remove_unpinned(os.path.join(self.root, name), self._aside(name))

    def remove(self, path: str) -> bool:
        """Remove one version dir unless a reader pins it (then False; it stays for a later prune)."""
        return remove_unpinned(path, self._aside(os.path.basename(os.path.normpath(path))))

    def remove_all(self) -> None:
        """Delete every version and ``latest`` (``tbg train --fresh``); refused while a reader pins a version."""
        for name in self.versions():
            reader = pinned_by(os.path.join(self.root, name))
            if reader is not None:
                raise LockedError(
                    f"{os.path.join(self.root, name)}: being read by {reader}; --fresh would delete it under"
                    " the reader: wait for it to finish or stop it"
                )
        for name in self.versions():
            if not remove_unpinned(os.path.join(self.root, name), self._aside(name)):
                raise LockedError(f"{os.path.join(self.root, name)}: a reader pinned it meanwhile; try again")
        shutil.rmtree(self.root, ignore_errors=True)

    def _aside(self, name: str) -> str:
        return os.path.join(self.root, f".tmp-removed-{name}-{uuid.uuid4().hex[:8]}")


def pinned(path: str) -> Checkpoint | None:
    """The version dir ``path`` pinned for a reader; None when it is gone (pruned before it could be pinned)."""
    pin = VersionPin(path)
    if not pin.acquire():
        return None
    try:
        return Checkpoint(path, pin)
    except BaseException:
        pin.release()
        raise


def open_checkpoint(path: str) -> Checkpoint:
    """A reader's checkpoint, pinned until released: a save_dir (its latest version), a ``checkpoints`` dir,
    or one version dir."""
    if os.path.isfile(os.path.join(path, "progress.json")):
        ckpt = pinned(path)
        return ckpt if ckpt is not None else Checkpoint(path)  # (gone meanwhile: Checkpoint says so)
    save_dir = os.path.dirname(path.rstrip("/")) if os.path.basename(path.rstrip("/")) == CHECKPOINTS else path
    return CheckpointStore(save_dir).require_latest(pin=True)


def resolve_checkpoint(save_dir: str, path: str | None) -> Checkpoint:
    """``--checkpoint PATH`` (save_dir, checkpoints dir or version dir), else the latest version of ``save_dir``;
    pinned for the reader until released."""
    if path is not None:
        if not os.path.isdir(path):
            raise CheckpointError(f"{path}: checkpoint not found")
        return open_checkpoint(path)
    if "://" in save_dir and not save_dir.startswith("file://"):  # object storage (a distributed run's)
        from tbg.remote_save_dir import pull_for_reading

        save_dir = pull_for_reading(save_dir)
    return CheckpointStore(save_dir).require_latest(pin=True)


def require_finite(array: np.ndarray, source: str) -> None:
    """Raise CheckpointError naming ``source`` and the first row holding a NaN or infinity (readers refuse garbage:
    training never commits it, so it means a damaged or hand-made file).  Row blocks bound the scratch memory."""
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)  # (0-dim: one row)
    block = max(1, (1 << 24) // max(1, rows.shape[1]))
    for lo in range(0, rows.shape[0], block):
        finite = np.isfinite(rows[lo : lo + block]).all(axis=1)
        if not finite.all():
            row = lo + int(np.argmin(finite))
            raise CheckpointError(f"{source}: non-finite values (NaN or inf) in row {row}; refusing to use them")

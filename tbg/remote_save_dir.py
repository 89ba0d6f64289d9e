"""A save_dir on object storage (any fsspec URL: gs://, s3://) for distributed trainers.

Object stores have no rename and no hard links, but a single object's upload is atomic: readers see the old
object or the new one.  So each trainer works in a local cache dir (its own save_dir, same layout, same
checksummed files) and the URL holds the shared truth:

- ``URL/partitions/<type>_<p>.h5``: the current file of each partition.  A trainer downloads it when it
  leases the partition (only when its generation in the store moved since its own copy) and uploads it after
  training the bucket, *before* the lease is released; the upload then bumps the generation.
- ``URL/checkpoints/v…/``: rank 0 uploads each committed version file by file, ``progress.json`` (whose
  checksum covers the file list) after the rest, and then ``URL/checkpoints/latest``: a version is visible
  only once whole.  A (re)started run first downloads the latest version into every trainer's cache, and
  rank 0 resets ``URL/partitions/`` to that version's shards.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

from tbg.checkpoint import CHECKPOINTS, LATEST, PROGRESS
from tbg.errors import StorageError


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def cache_dir(url: str, rank: int | str) -> str:
    """The local working save_dir of ``rank`` (or of a reader: ``"reader"``) for ``url`` (under TBG_CACHE_DIR,
    else the temp dir)."""
    base = os.environ.get("TBG_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tbg-cache")
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(base, digest, f"rank{rank}" if isinstance(rank, int) else rank)


class RemoteSaveDir:
    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.moved = {"uploaded": 0, "downloaded": 0}

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _fail(self, what: str, rel: str, exc: BaseException) -> StorageError:
        problem = " ".join(str(exc).split())[:160] or type(exc).__name__
        return StorageError(f"{self.url}/{rel}: cannot {what}: {problem}")

    def put(self, local: str, rel: str) -> None:
        try:
            self.fs.put_file(local, self._path(rel))
        except Exception as exc:  # noqa: BLE001 - any backend's failure: one line naming the object
            raise self._fail("upload", rel, exc) from None
        self.moved["uploaded"] += os.path.getsize(local)

    def get(self, rel: str, local: str) -> bool:
        """Download ``rel`` to ``local`` (temp + rename); False when there is no such object."""
        tmp = f"{local}.tmp-get"
        try:
            if not self.fs.exists(self._path(rel)):
                return False
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self.fs.get_file(self._path(rel), tmp)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("download", rel, exc) from None
        os.replace(tmp, local)
        self.moved["downloaded"] += os.path.getsize(local)
        return True

    def cat_text(self, rel: str) -> str | None:
        try:
            if not self.fs.exists(self._path(rel)):
                return None
            return self.fs.cat_file(self._path(rel)).decode("utf-8", "replace")
        except Exception as exc:  # noqa: BLE001
            raise self._fail("read", rel, exc) from None

    def pipe_text(self, rel: str, text: str) -> None:
        try:
            self.fs.pipe_file(self._path(rel), text.encode())
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", rel, exc) from None

    # ------------------------------------------------------------------ checkpoints
    def push_version(self, version_dir: str) -> None:
        """Upload a committed local version: its files, then progress.json, then ``latest``."""
        name = os.path.basename(version_dir.rstrip("/"))
        files = []
        for dirpath, _, filenames in os.walk(version_dir):
            for f in filenames:
                rel = os.path.relpath(os.path.join(dirpath, f), version_dir).replace(os.sep, "/")
                files.append(rel)
        for rel in sorted(files, key=lambda r: r == PROGRESS):
            self.put(os.path.join(version_dir, rel), f"{CHECKPOINTS}/{name}/{rel}")
        self.pipe_text(f"{CHECKPOINTS}/{LATEST}", name + "\n")

    def pull_latest(self, save_dir: str) -> str | None:
        """Download the latest remote version into ``save_dir/checkpoints`` (and point ``latest`` at it)."""
        from tbg.durable_files import atomic_write_text

        latest = self.cat_text(f"{CHECKPOINTS}/{LATEST}")
        name = (latest or "").strip()
        if not name or name == "none":
            return None
        local_root = os.path.join(save_dir, CHECKPOINTS)
        target = os.path.join(local_root, name)
        if not os.path.isfile(os.path.join(target, PROGRESS)):
            tmp = os.path.join(local_root, f".tmp-pull-{name}")
            prefix = self._path(f"{CHECKPOINTS}/{name}")
            try:
                objects = self.fs.find(prefix)
            except Exception as exc:  # noqa: BLE001
                raise self._fail("list", f"{CHECKPOINTS}/{name}", exc) from None
            if not objects:
                raise StorageError(f"{self.url}/{CHECKPOINTS}/{LATEST}: names {name}, which is not there")
            for obj in objects:
                rel = obj[len(prefix) :].lstrip("/")
                self.get(f"{CHECKPOINTS}/{name}/{rel}", os.path.join(tmp, *rel.split("/")))
            os.makedirs(local_root, exist_ok=True)
            os.replace(tmp, target)
        atomic_write_text(os.path.join(local_root, LATEST), name + "\n")
        return name


def pull_for_reading(url: str) -> str:
    """A local copy of the latest version under ``url`` (for eval and export; torch-free); its save_dir."""
    local = cache_dir(url, "reader")
    if RemoteSaveDir(url).pull_latest(local) is None:
        raise StorageError(f"{url}/{CHECKPOINTS}/{LATEST}: no committed checkpoint; run `tbg train` first")
    return local


def write_text(path: str, text: str) -> None:
    """Write a small result file to a local path or an fsspec URL (one object put: atomic)."""
    import fsspec

    with fsspec.open(path, "w") as fh:
        fh.write(text)


def remote_of(cfg: Any) -> RemoteSaveDir | None:
    return RemoteSaveDir(cfg.training.save_dir) if is_url(cfg.training.save_dir) else None

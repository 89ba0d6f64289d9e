"""The on-disk cache of query indexes: built once per checkpoint, reused by later queries.

    save_dir/query_index/<version>-<key>/
      <type>_<part>.<tag>.json              what the index was built from + its checksum (written last)
      <type>_<part>.<tag>.<sha12>.faiss     the faiss index (faiss.write_index)

``key`` hashes the checkpoint's identity (version, commit time, model fingerprint, graph import), so a
version number reused after ``tbg train --fresh`` never reads an old index.  An index is written to a temp
file, hashed, renamed to its checksummed name, and only then published by replacing the JSON (temp +
rename): readers see a complete index or none.  On load the JSON must describe the same checkpoint, shard
file, spec and shape, and the file must hash to the recorded sha256; a stale or corrupt entry is reported
(one warning line) and rebuilt, never used.  Dirs of checkpoint versions that no longer exist are pruned.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from typing import Any

from tbg.checkpoint import CHECKPOINTS, Checkpoint
from tbg.durable_files import atomic_write_text
from tbg.errors import CheckpointError
from tbg.query.index import IndexSpec, QueryIndex, faiss_module

FORMAT_VERSION = 1
CACHE_DIR = "query_index"
_STALE_TMP_S = 3600

log = logging.getLogger("tbg.query")


def checkpoint_identity(ckpt: Checkpoint) -> dict[str, Any]:
    """What distinguishes one committed checkpoint from any other that reuses its version number."""
    p = ckpt.progress
    return {
        "version": ckpt.version,
        "time": p.get("time"),
        "model_fingerprint": p.get("model_fingerprint"),
        "graph_import_id": p.get("graph_import_id"),
    }


def cache_name(ckpt: Checkpoint) -> str:
    """Cache dir name of a checkpoint: its version name and a hash of its identity."""
    key = hashlib.sha256(json.dumps(checkpoint_identity(ckpt), sort_keys=True).encode()).hexdigest()[:12]
    return f"{ckpt.name}-{key}"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_dir_of(ckpt: Checkpoint) -> str:
    parent = os.path.dirname(os.path.normpath(ckpt.path))
    return os.path.dirname(parent) if os.path.basename(parent) == CHECKPOINTS else parent


class IndexCache:
    """Indexes of one checkpoint; ``root=None`` keeps them in memory only (nothing written)."""

    def __init__(self, ckpt: Checkpoint, root: str | None = "default", comparator: str = "") -> None:
        self.ckpt = ckpt
        self.identity = checkpoint_identity(ckpt)
        self.comparator = comparator
        base = os.path.join(_save_dir_of(ckpt), CACHE_DIR) if root == "default" else root
        self.base = base
        self.dir = os.path.join(base, cache_name(ckpt)) if base is not None else None
        self._pruned = False

    def _stem(self, etype: str, part: int, spec: IndexSpec) -> str:
        assert self.dir is not None
        return os.path.join(self.dir, f"{etype}_{part}.{spec.tag}")

    def _expected(self, etype: str, part: int, spec: IndexSpec, rows: int, dim: int) -> dict[str, Any]:
        shard = self.ckpt.embedding_path(etype, part)
        st = os.stat(shard)
        return {
            "format_version": FORMAT_VERSION,
            "checkpoint": self.identity,
            "shard": {"file": os.path.basename(shard), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
            "entity_type": etype,
            "partition": part,
            "spec": {"kind": spec.kind, "metric": spec.metric, "nlist": spec.nlist},
            "comparator": self.comparator,
            "rows": rows,
            "dim": dim,
        }

    def get(
        self, etype: str, part: int, spec: IndexSpec, rows: int, dim: int, build: Callable[[], QueryIndex]
    ) -> QueryIndex:
        """The cached index of (etype, part, spec), else ``build()`` it and publish it."""
        if self.dir is None:
            return build()
        expected = self._expected(etype, part, spec, rows, dim)
        stem = self._stem(etype, part, spec)
        meta_path = stem + ".json"
        if os.path.exists(meta_path):
            index, problem = self._load(meta_path, expected)
            if index is not None:
                return index
            log.warning("tbg: query index %s is %s; rebuilding it", meta_path, problem)
        index = build()
        try:
            self._publish(stem, index, expected)
        except OSError as exc:
            log.warning("tbg: cannot cache the query index in %s (%s); it is kept in memory only", self.dir, exc)
        return index

    def _load(self, meta_path: str, expected: dict[str, Any]) -> tuple[QueryIndex | None, str]:
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
        except (OSError, ValueError) as exc:
            return None, f"unreadable ({exc})"
        if not isinstance(meta, dict):
            return None, "unreadable (not a JSON object)"
        for key, want in expected.items():
            if meta.get(key) != want:
                return None, f"stale ({key} differs)"
        path = os.path.join(os.path.dirname(meta_path), str(meta.get("file", "")))
        if not meta.get("file") or not os.path.isfile(path):
            return None, "incomplete (index file missing)"
        if _sha256(path) != meta.get("sha256"):
            return None, "corrupt (checksum mismatch)"
        faiss = faiss_module()
        numbers = {key: meta.get(key) for key in ("norm", "nprobe", "recall")}
        if any(v is not None and not isinstance(v, (int, float)) for v in numbers.values()):
            return None, "corrupt (norm/nprobe/recall not numbers)"
        try:
            index = QueryIndex(faiss.read_index(path), **numbers)
        except RuntimeError as exc:
            return None, f"corrupt ({str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'})"
        if index.ntotal != expected["rows"] or index.dim != expected["dim"]:
            return None, f"corrupt ({index.ntotal} x {index.dim}, expected {expected['rows']} x {expected['dim']})"
        return index, ""

    def _publish(self, stem: str, index: QueryIndex, expected: dict[str, Any]) -> None:
        faiss = faiss_module()
        assert self.dir is not None
        os.makedirs(self.dir, exist_ok=True)
        self._prune()
        tmp = f"{stem}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            faiss.write_index(index.index, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            digest = _sha256(tmp)
            final = f"{stem}.{digest[:12]}.faiss"
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        meta = {
            **expected,
            "file": os.path.basename(final),
            "sha256": digest,
            "norm": index.norm,
            "nprobe": index.nprobe,
            "recall": index.recall,
            "faiss_version": faiss.__version__,
        }
        atomic_write_text(stem + ".json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
        for other in glob.glob(glob.escape(stem) + ".*.faiss"):
            if other != final:
                os.remove(other)

    def _prune(self) -> None:
        """Drop cache dirs of checkpoints that no longer exist (or were replaced), and old temp files."""
        if self._pruned or self.base is None:
            return
        self._pruned = True
        ckpt_root = os.path.dirname(os.path.normpath(self.ckpt.path))
        now = time.time()
        for name in os.listdir(self.base):
            path = os.path.join(self.base, name)
            if path == self.dir or not os.path.isdir(path):
                continue
            try:
                current = cache_name(Checkpoint(os.path.join(ckpt_root, name.split("-", 1)[0])))
            except (CheckpointError, ValueError, KeyError):
                current = None
            if current != name:
                shutil.rmtree(path, ignore_errors=True)
        for tmp in glob.glob(os.path.join(glob.escape(self.dir or ""), "*.tmp-*")):
            try:
                if now - os.path.getmtime(tmp) > _STALE_TMP_S:
                    os.remove(tmp)
            except OSError:
                pass

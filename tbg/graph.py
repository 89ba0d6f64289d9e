"""The graph dir format: its reader (:class:`Graph`) and its writer (:class:`GraphWriter`), side by side.

Layout (format version 2, see docs/graph-format.md)::

    graph_dir/
      manifest.json                 format_version, id_mode, entity types, relations, splits, sources
      entities/<type>.h5            perm[k] = dense id at shuffled position k; position = inverse of perm;
                                    names (names mode: dense id -> UTF-8 name)
      <split>/edges_<i>_<j>.h5      lhs, rhs (offsets inside partitions), rel, [weight]; shuffled
      <split>/edges_<i>_<j>.<k>.h5  the same for the edges lineage entry k (an append) added to the bucket

Partition ``p`` of a type covers shuffled positions ``[bounds[p], bounds[p+1])`` (:class:`PartitionLayout`);
the entity at offset ``o`` of partition ``p`` has dense id ``perm[bounds[p] + o]``.  No other module knows
these file names or datasets.  A graph dir exists only when complete: the importer builds it in a temp dir
and renames it into place, so a dir with a manifest is always whole.  Every file is verified when read
(tbg/integrity.py): the manifest carries its own checksum and lists each file with its size, datasets carry
fletcher32 (names: a SHA-256), and each file's counts are checked against the manifest's.  Version 1 dirs
(no checksums) stay readable.  A grown graph (``tbg import --append``, tbg/append.py) keeps every entity's
(partition, offset); a bucket is then the concatenation of its segments (tbg/graph_manifest.py).

This module never imports torch: import and export must start fast.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import h5py
import numpy as np

from tbg.entity_file import read_rows, row_blocks
from tbg.errors import GraphError
from tbg.graph_manifest import check_manifest, lineage, segments
from tbg.h5write import H5Writer, create_h5
from tbg.integrity import FILES_KEY, checked_dataset, list_files, load_json, verify_files, with_checksum
from tbg.interrupts import deferred
from tbg.locking import DirectoryLock, reading

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")
_BUCKET_KEYS = ("lhs", "rhs", "rel", "weight")


@dataclass(frozen=True)
class PartitionLayout:
    """How ``count`` shuffled positions split into ``num_partitions`` balanced contiguous partitions.

    Sizes differ by at most one (the first ``count % P`` partitions get the extra entity).  This is the one
    place that maps a position to (partition, offset): the importer, the trainer and the evaluator all use it.
    """

    count: int
    num_partitions: int

    @cached_property
    def bounds(self) -> np.ndarray:
        """Partition p holds positions [bounds[p], bounds[p+1])."""
        base, extra = divmod(self.count, self.num_partitions)
        sizes = np.full(self.num_partitions, base, dtype=np.int64)
        sizes[:extra] += 1
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def partition_size(self, p: int) -> int:
        b = self.bounds
        return int(b[p + 1] - b[p])

    @property
    def max_partition_size(self) -> int:
        return self.partition_size(0) if self.count else 0

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(partition, offset inside it) of shuffled positions."""
        b = self.bounds
        part = np.searchsorted(b[1:-1], positions, side="right")
        return part, positions - b[part]


@dataclass(frozen=True)
class EntityType(PartitionLayout):
    """An entity type of the graph: its name and its partition layout."""

    name: str


@dataclass(frozen=True)
class Relation:
    name: str
    lhs: str
    rhs: str


@dataclass
class EdgeArrays:
    """A block of edges of one bucket: offsets inside the lhs/rhs partitions, relation ids, weights."""

    lhs: np.ndarray
    rhs: np.ndarray
    rel: np.ndarray
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.lhs.shape[0])


def offset_dtype(max_partition_size: int) -> np.dtype:
    return np.dtype(np.int32) if max_partition_size < 2**31 else np.dtype(np.int64)


class Graph:
    """Read-only view of a complete graph dir.  :meth:`open` also holds the dir's shared reader lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.hold: DirectoryLock | None = None
        manifest_path = os.path.join(path, MANIFEST)
        if not os.path.isfile(manifest_path):
            raise GraphError(f"{path}: no imported graph here (missing {MANIFEST}); run `tbg import` first")
        self.manifest: dict[str, Any] = load_json(manifest_path, GraphError, "manifest")
        version = self.manifest.get("format_version")
        if version not in READABLE_VERSIONS:
            raise GraphError(f"{manifest_path}: format_version {version!r}, this tbg reads {READABLE_VERSIONS}")
        check_manifest(self.manifest, manifest_path)
        verify_files(path, self.manifest.get(FILES_KEY, {}), manifest_path, GraphError)
        self.id_mode: str = self.manifest["id_mode"]
        self.entity_types: dict[str, EntityType] = {
            name: EntityType(count=int(t["count"]), num_partitions=int(t["num_partitions"]), name=name)
            for name, t in self.manifest["entity_types"].items()
        }
        self.relations: list[Relation] = [Relation(**r) for r in self.manifest["relations"]]
        self._perm: dict[str, np.ndarray] = {}
        self._position: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, path: str) -> Graph:
        """A reader's graph: ``tbg import --overwrite`` is refused until :meth:`release` (or until the object
        is dropped), and the graph is not opened while an import writes it (tbg/locking.py)."""
        hold = reading(path).acquire()
        try:
            graph = cls(path)
        except BaseException:
            hold.release()
            raise
        graph.hold = hold
        return graph

    def release(self) -> None:
        if self.hold is not None:
            self.hold.release()

    @property
    def import_id(self) -> str | None:
        """Identity of this import (None for graph dirs written before import ids existed)."""
        return self.manifest.get("import_id")

    @property
    def lineage(self) -> list[dict[str, Any]]:
        """Every import and append that made this graph, oldest first (see tbg/graph_manifest.py)."""
        return lineage(self.manifest)

    def segments(self, split: str, i: int, j: int) -> list[int]:
        """Edges of bucket (i, j) per lineage entry, in bucket order (segment k follows segment k-1)."""
        return segments(self.manifest, split, f"{i}_{j}")

    # ------------------------------------------------------------------ grid
    @property
    def num_lhs_partitions(self) -> int:
        return max(self.entity_types[r.lhs].num_partitions for r in self.relations)

    @property
    def num_rhs_partitions(self) -> int:
        return max(self.entity_types[r.rhs].num_partitions for r in self.relations)

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if s in self.manifest["splits"]]

    def split_info(self, split: str) -> dict[str, Any]:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            have = ", ".join(self.splits)
            raise GraphError(f"{self.path}: split {split!r} was not imported (have: {have})") from None

    def num_edges(self, split: str) -> int:
        return int(self.split_info(split)["num_edges"])

    def bucket_count(self, split: str, i: int, j: int) -> int:
        return int(self.split_info(split)["buckets"].get(f"{i}_{j}", 0))

    def has_weights(self, split: str) -> bool:
        return bool(self.split_info(split).get("has_weight", False))

    def bucket_path(self, split: str, i: int, j: int) -> str:
        return _bucket_path(self.path, split, i, j)

    # ------------------------------------------------------------------ edges
    def read_bucket(self, split: str, i: int, j: int, start: int = 0, stop: int | None = None) -> EdgeArrays:
        """Edges [start, stop) of bucket (i, j) (its segments concatenated); an empty bucket gives empty arrays."""
        total = self.bucket_count(split, i, j)
        stop = total if stop is None else min(stop, total)
        parts, base = [], 0
        for k, count in enumerate(self.segments(split, i, j)):
            lo, hi = max(start, base), min(stop, base + count)
            if lo < hi:
                parts.append(self._read_segment(split, i, j, k, count, lo - base, hi - base))
            base += count
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return EdgeArrays(empty, empty, empty, np.zeros(0, np.float32) if self.has_weights(split) else None)
        if len(parts) == 1:
            return parts[0]
        weight = np.concatenate([p.weight for p in parts]) if parts[0].weight is not None else None
        return EdgeArrays(*(np.concatenate([getattr(p, key) for p in parts]) for key in ("lhs", "rhs", "rel")), weight)

    def _read_segment(self, split: str, i: int, j: int, k: int, want: int, start: int, stop: int) -> EdgeArrays:
        path = _bucket_path(self.path, split, i, j, k)
        try:
            with h5py.File(path, "r") as f:
                sl = slice(start, stop)
                for key in ("lhs", "rhs", "rel", *(("weight",) if self.has_weights(split) else ())):
                    if f[key].shape != (want,):
                        raise GraphError(
                            f"{path}: dataset {key!r} holds {f[key].shape[0]} edges, the manifest says {want}"
                        )
                weight = f["weight"][sl] if "weight" in f else None
                return EdgeArrays(f["lhs"][sl], f["rhs"][sl], f["rel"][sl], weight)
        except (OSError, KeyError) as exc:
            raise GraphError(f"{path}: damaged or unreadable bucket file: {exc}") from None

    def iter_bucket(self, split: str, i: int, j: int, chunk_edges: int) -> Iterator[EdgeArrays]:
        """Bucket (i, j) in contiguous chunks (buckets are shuffled, so each chunk is an unbiased sample)."""
        total = self.bucket_count(split, i, j)
        for start in range(0, total, chunk_edges):
            yield self.read_bucket(split, i, j, start, min(total, start + chunk_edges))

    def buckets(self, split: str) -> list[tuple[int, int]]:
        """Non-empty buckets of a split, in row-major order."""
        out = []
        for key in self.split_info(split)["buckets"]:
            i, j = (int(x) for x in key.split("_"))
            out.append((i, j))
        return sorted(out)

    # ------------------------------------------------------------------ entities
    def _entity_file(self, etype: str) -> str:
        return _entity_path(self.path, etype)

    def perm(self, etype: str) -> np.ndarray:
        """perm[k] = dense id at shuffled position k."""
        if etype not in self._perm:
            self._perm[etype] = self._entity_array(etype, "perm")
        return self._perm[etype]

    def position(self, etype: str) -> np.ndarray:
        """position[id] = shuffled position of dense id (inverse of perm)."""
        if etype not in self._position:
            self._position[etype] = self._entity_array(etype, "position")
        return self._position[etype]

    def _entity_array(self, etype: str, key: str) -> np.ndarray:
        """One dataset of an entity file, checked against the manifest's entity count."""
        return read_rows(self._entity_file(etype), key, self.entity_types[etype].count)

    def partition_ids(self, etype: str, p: int) -> np.ndarray:
        """Dense ids of the entities of partition p, by offset."""
        b = self.entity_types[etype].bounds
        return self.perm(etype)[b[p] : b[p + 1]]

    def locate(self, etype: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(partition, offset) of dense ids."""
        return self.entity_types[etype].locate(self.position(etype)[ids])

    def names(self, etype: str, ids: np.ndarray | None = None) -> np.ndarray:
        """Entity names of dense ids (names mode), or the ids themselves as strings (indices mode)."""
        if self.id_mode != "names":
            ids = np.arange(self.entity_types[etype].count) if ids is None else ids
            return ids.astype(str)
        names = self._entity_array(etype, "names")
        return names if ids is None else names[ids]

    def name_blocks(self, etype: str, rows: int) -> Iterator[np.ndarray]:
        """:meth:`names` of dense ids 0.. as consecutive slices of at most ``rows`` (one in memory at a time)."""
        count = self.entity_types[etype].count
        if self.id_mode == "names":
            yield from row_blocks(self._entity_file(etype), "names", count, rows)
        else:
            for lo in range(0, count, rows):
                yield np.arange(lo, min(count, lo + rows)).astype(str)

    def read_partition_ids(self, etype: str, p: int) -> np.ndarray:
        """:meth:`partition_ids` read from the entity file: the whole permutation is never loaded."""
        b = self.entity_types[etype].bounds
        return read_rows(self._entity_file(etype), "perm", self.entity_types[etype].count, int(b[p]), int(b[p + 1]))


# ----------------------------------------------------------------------------- writing


def _entity_path(root: str, etype: str) -> str:
    return os.path.join(root, "entities", f"{etype}.h5")


def _bucket_path(root: str, split: str, i: int, j: int, segment: int = 0) -> str:
    name = f"edges_{i}_{j}.h5" if segment == 0 else f"edges_{i}_{j}.{segment}.h5"
    return os.path.join(root, split, name)


class GraphWriter:
    """Writes the files of a graph dir under ``root``.

    The caller makes the whole dir atomic (the importer writes into a temp dir and renames it into place);
    the manifest is written last, so its presence marks a complete dir.  ``segment`` k > 0: the buckets
    written are lineage entry k's segments (an append), beside the files :meth:`adopt` linked in.
    """

    def __init__(self, root: str, segment: int = 0) -> None:
        self.root = root
        self.segment = segment
        self._made: set[str] = set()  # split dirs already created

    def adopt(self, graph: Graph, skip_types: set[str]) -> None:
        """Hard-link (else copy) every file of ``graph`` but its manifest and the entity files of ``skip_types``
        (an append rewrites those); files are immutable once committed, so the two dirs may share them."""
        skip = {MANIFEST, *(os.path.relpath(_entity_path(graph.path, t), graph.path) for t in skip_types)}
        names = graph.manifest.get(FILES_KEY) or list_files(graph.path, digest=lambda name: False)
        for rel in names:
            if rel in skip:
                continue
            src, dest = os.path.join(graph.path, rel), os.path.join(self.root, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)

    def write_entities(
        self, etype: str, perm: np.ndarray, num_partitions: int, names: np.ndarray | None = None
    ) -> np.ndarray:
        """``entities/<type>.h5`` from ``perm`` (position -> dense id); returns ``position`` (its inverse)."""
        count = len(perm)
        position = np.empty(count, dtype=np.int64)
        position[perm] = np.arange(count, dtype=np.int64)
        path = _entity_path(self.root, etype)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with create_h5(path) as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["count"] = count
            f.attrs["num_partitions"] = num_partitions
            checked_dataset(f, "perm", np.asarray(perm, dtype=np.int64))
            checked_dataset(f, "position", position)
            if names is not None:
                checked_dataset(f, "names", np.asarray(names, dtype=object), dtype=h5py.string_dtype("utf-8"))
        return position

    def bucket_path(self, split: str, i: int, j: int) -> str:
        path = _bucket_path(self.root, split, i, j, self.segment)
        if split not in self._made:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._made.add(split)
        return path

    def write_bucket(self, split: str, i: int, j: int, edges: EdgeArrays) -> None:
        """Bucket (i, j) of ``split`` in one go (edges already in their final, shuffled order)."""
        with BucketWriter(self.bucket_path(split, i, j), len(edges), _dtypes(edges), edges):
            pass

    def bucket_writer(self, split: str, i: int, j: int, count: int, dtypes: dict[str, np.dtype]) -> BucketWriter:
        """Bucket (i, j) of ``split`` written slice by slice, for buckets too large to hold at once."""
        return BucketWriter(self.bucket_path(split, i, j), count, dtypes)

    def write_manifest(
        self,
        id_mode: str,
        entity_types: dict[str, tuple[int, int]],
        relations: list[tuple[str, str, str]],
        splits: dict[str, dict[str, Any]],
        **metadata: Any,
    ) -> dict[str, Any]:
        """``manifest.json`` (fsynced); entity_types: name -> (count, num_partitions); relations: (name, lhs, rhs).

        ``splits`` maps a split to its entry (``num_edges``, ``buckets`` {"i_j": count}, ``has_weight``, and
        whatever the importer records about its sources); ``metadata`` adds top-level keys.  Written last: it
        lists every file already under ``root`` with its size, and carries its own checksum.
        """
        manifest = {
            "format_version": FORMAT_VERSION,
            "id_mode": id_mode,
            "entity_types": {n: {"count": int(c), "num_partitions": int(p)} for n, (c, p) in entity_types.items()},
            "relations": [{"name": n, "lhs": lhs, "rhs": rhs} for n, lhs, rhs in relations],
            "splits": {
                k: {**splits[k], "buckets": dict(sorted(splits[k]["buckets"].items()))} for k in SPLITS if k in splits
            },
            **metadata,
        }
        manifest[FILES_KEY] = list_files(self.root, digest=lambda name: False, skip=(MANIFEST,))
        manifest = with_checksum(manifest)
        with open(os.path.join(self.root, MANIFEST), "w") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        return manifest


def _dtypes(edges: EdgeArrays) -> dict[str, np.dtype]:
    return {k: getattr(edges, k).dtype for k in _BUCKET_KEYS if getattr(edges, k) is not None}


class BucketWriter:
    """Writes one bucket file of known size slice by slice (HDF5 chunks sized to the data, never PBG's
    150 MiB reservations); ``edges``: the whole bucket, written with the datasets (fewest HDF5 calls)."""

    def __init__(self, path: str, count: int, dtypes: dict[str, np.dtype], edges: EdgeArrays | None = None) -> None:
        chunk = max(1, min(count, 1 << 16))
        self._out = H5Writer(path)  # a failing disk: one OSError naming the file, at close (tbg/h5write.py)
        self._file = self._out.file
        self._datasets: dict[str, Any] = {}
        try:
            with deferred():  # (HDF5 calls back into Python here: tbg/interrupts.py)
                self._file.attrs["format_version"] = FORMAT_VERSION
                self._file.attrs["count"] = count
                for key in _BUCKET_KEYS:
                    if key in dtypes:
                        chunks = (chunk,) if count else None
                        data = None if edges is None else np.asarray(getattr(edges, key), dtype=dtypes[key])
                        self._datasets[key] = checked_dataset(
                            self._file, key, data, shape=(count,), dtype=dtypes[key], chunks=chunks
                        )
        except BaseException:
            self._out.abort()
            raise
        self._count = count
        self._pos = 0 if edges is None else count

    def append(self, edges: EdgeArrays) -> None:
        end = self._pos + len(edges)
        if end > self._count:
            raise ValueError(f"bucket overflow: {end} > {self._count}")
        with deferred():
            for key, ds in self._datasets.items():
                data = getattr(edges, key)
                if data is not None and len(data):
                    ds[self._pos : end] = data
        self._pos = end

    def close(self) -> None:
        if self._pos != self._count:
            self._out.abort()
            raise ValueError(f"bucket incomplete: wrote {self._pos} of {self._count} edges")
        self._out.close()

    def __enter__(self) -> BucketWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        elif isinstance(exc_type, type) and issubclass(exc_type, Exception):
            self._out.abort()  # (raises the disk error, when that is what stopped the writes)
        else:
            try:
                self._out.abort()
            except OSError:
                pass

"""`tbg import CONFIG`: source edges (fsspec URL/glob; Parquet/TSV/CSV) -> partitioned graph dir.

Pipeline (one read of each source):
- indices mode: every row 0..num_embeddings-1 of a table is an entity; entity types are shuffled first, so
  each batch is located and routed straight to per-bucket spill files;
- names mode: each batch's names are encoded with the per-type dictionaries (dense ids by first appearance)
  and the id edges are spilled per split; after all splits are read, the types are shuffled and the spilled
  edges routed to buckets.
Then each bucket is shuffled and written, and the whole dir, built beside the target, is renamed into place.

This module must not import torch (directly or indirectly): `tbg import` has to start fast.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from tbg import __version__
from tbg.config import Config, DataConfig, IdMode, load_config
from tbg.durable_files import fsync_dir
from tbg.errors import InputError, storage_errors
from tbg.graph import MANIFEST, GraphWriter, PartitionLayout, offset_dtype
from tbg.io import columns
from tbg.io.bucket_spill import BucketRouter, ShuffledType, record_dtype
from tbg.io.dictionary import EntityDictionary
from tbg.io.phases import PhaseClock
from tbg.io.sources import ReadSpec, SourceReader, resolve
from tbg.locking import DirectoryLock, exclusive, remove_path
from tbg.memory import choose_partitions

_ID_RECORD = np.dtype([("lhs", np.int64), ("rhs", np.int64), ("rel", np.int32), ("weight", np.float32)])


@dataclass
class ImportSummary:
    """What an import produced, for the CLI's table and for callers."""

    graph_dir: str
    id_mode: str
    splits: dict[str, int]
    entity_types: dict[str, tuple[int, int]]
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)
    new_entities: dict[str, int] | None = None  # an append: entities it added per type
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per stage (tbg/io/phases.py)
    phases_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per stage

    @property
    def num_edges(self) -> int:
        return sum(self.splits.values())

    @property
    def edges_per_second(self) -> float:
        return self.num_edges / self.seconds if self.seconds > 0 else float("inf")

    def table(self) -> str:
        grown = self.new_entities is not None
        added = " added" if grown else ""
        lines = [f"graph dir: {self.graph_dir}  (id_mode {self.id_mode})", "", f"{'split':<10}{'edges' + added:>14}"]
        lines += [f"{name:<10}{count:>14,}" for name, count in self.splits.items()]
        lines += ["", f"{'entity type':<16}{'entities':>14}{'partitions':>12}" + (f"{'new':>12}" if grown else "")]
        lines += [f"{name:<16}{c:>14,}{p:>12}" + (f"{self.new_entities[name]:>12,}" if grown else "")  # type: ignore[index]
                  for name, (c, p) in self.entity_types.items()]  # fmt: skip
        what = "edges appended" if grown else "edges"
        lines += ["", f"{self.num_edges:,} {what} in {self.seconds:.2f} s ({self.edges_per_second:,.0f} edges/s)"]
        if self.phases:
            lines.append("seconds by phase: " + ", ".join(f"{k} {v:.2f}" for k, v in self.phases.items()))
        return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing graph dir (atomically)")
    parser.add_argument(
        "--splits",
        default=None,
        help="comma-separated subset of train,valid,test to import (default: every split the config names)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.add_argument(
        "--append",
        action="append",
        metavar="[SPLIT=]SOURCE",
        help="grow the existing graph dir with the edges of SOURCE (a data_root: path, dir, glob or URL) in SPLIT"
        " (train unless given); repeat for several splits, all in one append. Known entities keep their"
        " partition and offset, new ones get new rows (docs/graph-format.md)",
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.append:
        from tbg.append import append_graph, parse_append

        if args.overwrite or args.splits:
            raise InputError("--append: not with --overwrite or --splits (an append adds to the graph dir as it is)")
        summary = append_graph(cfg, parse_append(args.append), progress=not args.no_progress)
        print(summary.table())
        return 0
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    summary = import_graph(cfg, overwrite=args.overwrite, progress=not args.no_progress, splits=splits)
    print(summary.table())
    return 0


# ----------------------------------------------------------------------------- API


def import_graph(
    cfg: Config,
    overwrite: bool = False,
    progress: bool = True,
    splits: list[str] | None = None,
) -> ImportSummary:
    """Import every split of ``cfg`` into ``cfg.graph_dir``; nothing is left behind on failure."""
    target = _local_dir(cfg.graph_dir)
    with storage_errors(target, f"nothing imported into {target}"), exclusive(target, "tbg import") as lock:
        clean_leftovers(lock, target)
        return _import_locked(cfg, target, overwrite, progress, splits)


def clean_leftovers(lock: DirectoryLock, target: str) -> None:
    """What an interrupted import or append left beside ``target``: a graph dir moved aside by a run killed
    between its two renames is moved back (``target`` is then missing), then temp and moved-aside dirs go."""
    if not os.path.exists(target):
        from glob import escape, glob

        for old in sorted(glob(escape(os.path.abspath(target)) + ".old-*")):
            if os.path.isfile(os.path.join(old, MANIFEST)):
                os.rename(old, target)
                break
    lock.remove_leftovers()


def _import_locked(
    cfg: Config, target: str, overwrite: bool, progress: bool, splits: list[str] | None
) -> ImportSummary:
    start = time.perf_counter()
    if os.path.exists(target) and not overwrite:
        raise InputError(f"{target}: graph dir already exists; pass --overwrite to replace it")
    chosen = cfg.splits()
    if splits is not None:
        unknown = [s for s in splits if s not in chosen]
        if unknown:
            raise InputError(f"--splits: unknown or unconfigured split(s) {unknown} (config has {list(chosen)})")
        chosen = {k: v for k, v in chosen.items() if k in splits}
    tmp = f"{os.path.abspath(target)}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    os.makedirs(tmp)
    builder = _Builder(cfg, tmp, progress)
    try:
        manifest = builder.build(chosen)
        with builder.clock("commit"):
            _commit(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    types = {k: (v["count"], v["num_partitions"]) for k, v in manifest["entity_types"].items()}
    split_edges = {k: v["num_edges"] for k, v in manifest["splits"].items()}
    seconds = time.perf_counter() - start
    return ImportSummary(
        target, manifest["id_mode"], split_edges, types, seconds, manifest,
        phases=builder.clock.seconds(), phases_cpu=builder.clock.cpu_seconds(),
    )  # fmt: skip


def _local_dir(path: str) -> str:
    if path.startswith("file://"):
        return path[len("file://") :]
    if "://" in path:
        raise InputError(f"graph.dir {path!r}: the graph dir must be on a local or mounted filesystem")
    return path


def _commit(tmp: str, target: str) -> None:
    """Rename the finished dir into place; an existing one is moved aside first and deleted after.  Its files
    are on disk already (each is fsynced as it is closed); its folders' entries are flushed before the rename
    and the parent's after it, so a crash right after an import never leaves a graph dir with missing files."""
    for folder, _, _ in os.walk(tmp, topdown=False):
        fsync_dir(folder)
    if not os.path.exists(target):
        os.rename(tmp, target)
        fsync_dir(os.path.dirname(os.path.abspath(target)))
        return
    old = f"{os.path.abspath(target)}.old-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(target)))
    remove_path(old)


class _Builder:
    """Builds a complete graph dir inside ``root`` (a temp dir)."""

    def __init__(self, cfg: Config, root: str, progress: bool) -> None:
        self.cfg, self.root, self.progress = cfg, root, progress
        self.g = cfg.graph
        self.names_mode = self.g.id_mode == IdMode.names
        self.tables = {t.name: t for t in cfg.model.embeddings.tables}
        self.relations = cfg.model.relations
        self.rel_names = [r.name for r in self.relations]
        self.rel_dtype = np.dtype(np.int16) if len(self.relations) < 2**15 else np.dtype(np.int32)
        cols = self.g.columns
        self.has_weight = cols is not None and cols.weight is not None
        self.writer = GraphWriter(root)
        self.spill = os.path.join(root, ".spill")
        self.rows_seen = 0
        self.clock = PhaseClock()

    # ------------------------------------------------------------------ reading
    def _spec(self) -> ReadSpec:
        cols = self.g.columns
        columns = None if cols is None else {"lhs": cols.lhs, "rel": cols.rel, "rhs": cols.rhs, "weight": cols.weight}
        return ReadSpec(
            columns=columns,  # type: ignore[arg-type]
            format=self.g.format.value if self.g.format is not None else None,
            delimiter=self.g.delimiter,
            header=self.g.header,
            chunk_rows=self.g.chunk_rows,
            id_type="string" if self.names_mode else "int",
            rel_type="int" if self.g.relation_by == "index" else "string",
            # one relation: a rel column named (by default `rel`) but absent means every edge is that relation
            optional=("rel",) if len(self.relations) == 1 else (),
        )

    def _batches(self, split: str, data: DataConfig) -> tuple[SourceReader, Iterator[Any], list[dict[str, Any]]]:
        fs, files = resolve(data.data_root)
        reader = SourceReader(fs, files, self._spec(), offset=data.offset or 0, limit=data.limit)
        sources = [{"path": f.url, "size": f.size} for f in files]
        return reader, _prefetch(iter(reader), self.clock), sources

    def _bar(self, split: str) -> Any:
        from tqdm import tqdm

        return tqdm(
            desc=f"import {split}",
            unit=" edges",
            unit_scale=True,
            file=sys.stderr,
            disable=not self.progress,
            mininterval=0.5,
        )

    def _edges(self, batch: Any) -> tuple[np.ndarray, np.ndarray | None]:
        rel = columns.relation_ids(batch, self.rel_names, self.g.relation_by)
        weight = columns.weights(batch) if "weight" in batch.columns else None
        return rel, weight

    # ------------------------------------------------------------------ build
    def build(self, splits: dict[str, DataConfig]) -> dict[str, Any]:
        split_info: dict[str, dict[str, Any]] = {}
        if self.names_mode:
            dictionaries = self._dictionaries()
            spilled = {split: self._read_names(split, data, dictionaries, split_info) for split, data in splits.items()}
            counts = {name: d.count for name, d in dictionaries.items()}
            parts = self._partition(counts, dictionaries)
            for split, path in spilled.items():
                router = self._router(split, parts)
                for chunk in _read_records(path, self.g.chunk_rows, self.clock):
                    router.add(chunk["lhs"], chunk["rhs"], chunk["rel"], chunk["weight"] if self.has_weight else None)
                os.remove(path)
                split_info[split]["buckets"] = self._finish(split, router)
        else:
            counts = {name: int(t.num_embeddings or 0) for name, t in self.tables.items()}
            parts = self._partition(counts, None)
            for split, data in splits.items():
                router = self._router(split, parts)
                split_info[split] = self._read_indices(split, data, router)
                split_info[split]["buckets"] = self._finish(split, router)
        shutil.rmtree(self.spill, ignore_errors=True)
        with self.clock("manifest"):
            return self._manifest(counts, split_info)

    def _dictionaries(self) -> dict[str, EntityDictionary]:
        return {name: EntityDictionary(name) for name in self.tables}

    def _partition(self, counts: dict[str, int], dictionaries: dict[str, EntityDictionary] | None) -> dict:
        # num_partitions: auto is resolved here, from runtime.memory_budget and the counts (tbg/memory.py)
        self.num_partitions = choose_partitions(self.cfg, counts)
        types = {}
        for name in self.tables:
            perm = ShuffledType.permutation(name, counts[name], self.g.seed)
            names = None
            if dictionaries is not None:
                names = dictionaries[name].values.to_numpy(zero_copy_only=False).astype(object)
            p = self.num_partitions[name]
            with self.clock("entities"):
                position = self.writer.write_entities(name, perm, p, names)
            types[name] = ShuffledType(name, PartitionLayout(counts[name], p), position)
        return types

    def _router(self, split: str, parts: dict[str, ShuffledType]) -> BucketRouter:
        largest = max(p.layout.max_partition_size for p in parts.values())
        dtype = record_dtype(offset_dtype(largest), self.rel_dtype, self.has_weight)
        return BucketRouter(
            os.path.join(self.spill, split),
            [parts[r.lhs] for r in self.relations],
            [parts[r.rhs] for r in self.relations],
            dtype,
            self.clock,
        )

    def _finish(self, split: str, router: BucketRouter) -> dict[str, int]:
        block = max(1 << 20, self.g.chunk_rows)  # bucket edges shuffled in memory at once (larger: external)
        return router.finish(self.writer, split, _split_seed(self.g.seed, split), block)

    def _read_indices(self, split: str, data: DataConfig, router: BucketRouter) -> dict[str, Any]:
        limits = np.array([int(self.tables[r.lhs].num_embeddings or 0) for r in self.relations], np.int64)
        rlimits = np.array([int(self.tables[r.rhs].num_embeddings or 0) for r in self.relations], np.int64)
        per_rel = np.zeros(len(self.relations), np.int64)
        reader, batches, sources = self._batches(split, data)
        with self._bar(split) as bar:
            for batch in batches:
                with self.clock("parse"):
                    rel, weight = self._edges(batch)
                    lhs = columns.int_ids(batch, "lhs")
                    rhs = columns.int_ids(batch, "rhs")
                    self._check_range(batch, "lhs", lhs, rel, limits, [r.lhs for r in self.relations])
                    self._check_range(batch, "rhs", rhs, rel, rlimits, [r.rhs for r in self.relations])
                    per_rel += np.bincount(rel, minlength=len(self.relations))
                router.add(lhs, rhs, rel, weight)
                bar.update(batch.num_rows)
                del batch, lhs, rhs, rel, weight
                _release_arrow_memory()
        return self._split_entry(reader, sources, per_rel)

    def _check_range(self, batch: Any, role: str, ids: np.ndarray, rel: np.ndarray, limits: np.ndarray, tables) -> None:
        bound = limits[0] if (limits == limits[0]).all() else limits[rel]
        bad = ids >= bound
        if bad.any():
            k = int(np.argmax(bad))
            table = tables[int(rel[k])]
            raise InputError(
                f"{batch.file.url} row {batch.row(k)}: column {role!r}: id {ids[k]} out of range for table"
                f" {table!r} (num_embeddings {self.tables[table].num_embeddings})"
            )

    def _read_names(
        self, split: str, data: DataConfig, dictionaries: dict[str, EntityDictionary], info: dict[str, Any]
    ) -> str:
        os.makedirs(self.spill, exist_ok=True)
        path = os.path.join(self.spill, f"{split}.ids")
        per_rel = np.zeros(len(self.relations), np.int64)
        reader, batches, sources = self._batches(split, data)
        lhs_types = [r.lhs for r in self.relations]
        rhs_types = [r.rhs for r in self.relations]
        with open(path, "wb") as out, self._bar(split) as bar:
            for batch in batches:
                with self.clock("parse"):
                    rel, weight = self._edges(batch)
                    rec = np.empty(batch.num_rows, dtype=_ID_RECORD)
                    rec["rel"] = rel
                    rec["weight"] = weight if weight is not None else 0.0
                    sides = {role: columns.string_ids(batch, role) for role in ("lhs", "rhs")}
                    per_rel += np.bincount(rel, minlength=len(self.relations))
                with self.clock("dictionary"):
                    for role, types in (("lhs", lhs_types), ("rhs", rhs_types)):
                        rec[role] = _encode(sides[role], rel, types, dictionaries)
                    self._check_capacity(batch, dictionaries)
                with self.clock("id_spill"):
                    out.write(memoryview(rec).cast("B"))
                bar.update(batch.num_rows)
                _release_arrow_memory()
        info[split] = self._split_entry(reader, sources, per_rel)
        return path

    def _check_capacity(self, batch: Any, dictionaries: dict[str, EntityDictionary]) -> None:
        for name, d in dictionaries.items():
            cap = self.tables[name].num_embeddings
            if cap is not None and d.count > cap:
                last = batch.row(batch.num_rows - 1)
                raise InputError(
                    f"{batch.file.url} rows {batch.first_row}-{last}: table {name!r} has more than"
                    f" num_embeddings={cap} distinct entities"
                )

    def _split_entry(self, reader: SourceReader, sources: list[dict[str, Any]], per_rel: np.ndarray) -> dict:
        for s in sources:
            s["rows"] = reader.rows_taken.get(s["path"], 0)
        return {
            "num_edges": int(per_rel.sum()),
            "per_relation": [int(x) for x in per_rel],
            "has_weight": self.has_weight,
            "sources": sources,
            "offset": reader.offset,
            "limit": reader.limit,
        }

    def _manifest(self, counts: dict[str, int], splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
        import_id = secrets.token_hex(8)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        entry = {
            "kind": "import",
            "import_id": import_id,
            "created": created,
            "entity_counts": dict(counts),
            "splits": {s: {"num_edges": info["num_edges"]} for s, info in splits.items()},
        }
        return self.writer.write_manifest(
            self.g.id_mode.value,
            {name: (counts[name], self.num_partitions[name]) for name in self.tables},
            [(r.name, r.lhs, r.rhs) for r in self.relations],
            splits,
            seed=self.g.seed,
            config_fingerprint=self.cfg.fingerprint("model", "graph", "train_data", "validation_data", "test_data"),
            created=created,
            # names-mode ids depend on batch order, so every import gets its own id: checkpoints record it and
            # refuse to be read against another import of the "same" graph
            import_id=import_id,
            tbg_version=__version__,
            lineage=[entry],
        )


def _encode(names: Any, rel: np.ndarray, types: list[str], dictionaries: dict[str, EntityDictionary]) -> np.ndarray:
    """Dense ids of one side's names; the relation's table on that side decides the entity type."""
    distinct = list(dict.fromkeys(types))
    if len(distinct) == 1:
        return dictionaries[distinct[0]].encode(names)
    import pyarrow as pa

    kind = np.array([distinct.index(t) for t in types], np.int64)[rel]
    ids = np.empty(len(rel), np.int64)
    for k, t in enumerate(distinct):
        mask = kind == k
        if mask.any():
            ids[mask] = dictionaries[t].encode(names.filter(pa.array(mask)))
    return ids


def _release_arrow_memory() -> None:
    """Hand Arrow's freed batch buffers back to the OS after each batch.

    Arrow's allocator otherwise keeps them cached, and peak RSS grows with the input instead of staying flat
    (docs/benchmarks.md).
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _read_records(path: str, chunk: int, clock: PhaseClock) -> Iterator[np.ndarray]:
    with open(path, "rb") as fh:
        while True:
            with clock("id_spill"):
                raw = fh.read(chunk * _ID_RECORD.itemsize)
            if not raw:
                return
            yield np.frombuffer(raw, dtype=_ID_RECORD)


def _split_seed(seed: int, split: str) -> int:
    return seed * 1000 + ("train", "valid", "test").index(split)


def _prefetch(it: Iterator[Any], clock: PhaseClock, depth: int = 2) -> Iterator[Any]:
    """Read the next batches on a thread while this one is processed (pyarrow and numpy release the GIL).

    The thread's seconds are the clock's ``read``; the consumer's waits for a batch its ``read_wait``."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            while True:
                t, cpu = time.perf_counter(), time.thread_time()
                item = next(it, done)
                clock.add("read", time.perf_counter() - t, time.thread_time() - cpu)
                if item is done:
                    break
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put((done, exc))

    thread = threading.Thread(target=worker, name="tbg-import-read", daemon=True)
    thread.start()
    try:
        while True:
            with clock("read_wait"):
                item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)

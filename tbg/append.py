"""`tbg import CONFIG --append [SPLIT=]SOURCE`: grow an existing graph dir with the edges of new sources.

Entities already in the graph keep their dense id and their (partition, offset), so every bucket file, every
checkpoint shard row and every old edge stays valid; the appended edges are routed with the grown layout and
written as a new *segment* of their buckets (``edges_<i>_<j>.<k>.h5`` for lineage entry ``k``).  New entities
(names unseen in names mode; rows ``count..num_embeddings-1`` in indices mode) are shuffled (seeded by the
graph's seed, the type and ``k``) and dealt to the partitions so that they stay balanced: the layout stays
the standard one of ``tbg.graph.PartitionLayout`` for the new count, whose partitions only ever grow, so each
partition gets the rows it gains appended after its old ones.

The grown graph is built beside the target like an import: unchanged files are hard-linked in, the grown
types' entity files, the new segments and the manifest (its lineage extended by one entry) are written, and
the dir is renamed into place under the graph dir's lock; a killed append leaves the old graph as it was.
No torch here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import zlib
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import attrs
import numpy as np
import pyarrow as pa

from tbg import __version__
from tbg.config import Config, DataConfig
from tbg.consistency import check_graph
from tbg.errors import InputError, storage_errors
from tbg.graph import SPLITS, Graph, GraphWriter, PartitionLayout
from tbg.importer import ImportSummary, _Builder, _commit, _local_dir, _split_seed, clean_leftovers
from tbg.io.bucket_spill import BucketRouter, ShuffledType
from tbg.io.dictionary import EntityDictionary
from tbg.locking import exclusive


def parse_append(values: Sequence[str]) -> dict[str, str]:
    """``--append`` values (``[SPLIT=]SOURCE``) as {split: source}; train where no split is named."""
    out: dict[str, str] = {}
    for value in values:
        split, sep, source = value.partition("=")
        if not sep or split not in SPLITS:
            split, source = "train", value
        if not source:
            raise InputError(f"--append {value!r}: no source given")
        if split in out:
            raise InputError(f"--append: split {split!r} given twice ({out[split]!r}, {source!r})")
        out[split] = source
    return out


def append_graph(cfg: Config, sources: dict[str, str], progress: bool = True) -> ImportSummary:
    """Append the edges of ``sources`` ({split: data_root}) to the graph dir ``cfg.graph_dir`` (one lineage entry)."""
    target = _local_dir(cfg.graph_dir)
    if not sources:
        raise InputError("--append: no sources given")
    unknown = sorted(set(sources) - set(SPLITS))
    if unknown:
        raise InputError(f"--append: unknown split(s) {unknown} (splits: {', '.join(SPLITS)})")
    with storage_errors(target, f"nothing appended to {target}"), exclusive(target, "tbg import --append") as lock:
        clean_leftovers(lock, target)
        start = time.perf_counter()
        graph = Graph(target)
        check_appendable(cfg, graph)
        tmp = f"{os.path.abspath(target)}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        os.makedirs(tmp)
        try:
            appender = _Appender(cfg, tmp, progress, graph)
            manifest = appender.build({s: _source(cfg, root) for s, root in sources.items()})
            _commit(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    types = {k: (v["count"], v["num_partitions"]) for k, v in manifest["entity_types"].items()}
    entry = manifest["lineage"][-1]
    added = {s: info["num_edges"] for s, info in entry["splits"].items()}
    seconds = time.perf_counter() - start
    return ImportSummary(target, manifest["id_mode"], added, types, seconds, manifest, entry["new_entities"])


def check_appendable(cfg: Config, graph: Graph) -> None:
    """The config describes this graph (types, partitions, relations, id mode, weights); counts may grow."""
    if cfg.graph.id_mode.value != graph.id_mode:
        raise InputError(
            f"graph.id_mode: {cfg.graph.id_mode.value} but the graph at {graph.path} was imported with"
            f" {graph.id_mode}; an append keeps the graph's id mode"
        )
    check_graph(cfg, graph, growing=True)
    cols = cfg.graph.columns
    weighted = cols is not None and cols.weight is not None
    for split in graph.splits:
        if graph.num_edges(split) and graph.has_weights(split) != weighted:
            had = "with" if graph.has_weights(split) else "without"
            raise InputError(
                f"graph.columns.weight: {'set' if weighted else 'not set'}, but the {split} edges of {graph.path}"
                f" were imported {had} weights; an append must match"
            )


def _source(cfg: Config, root: str) -> DataConfig:
    return attrs.evolve(cfg.train_data, data_root=root, offset=None, limit=None)


# manifest keys an append writes anew (the others, such as seed and created, are the import's)
_REWRITTEN = ("format_version", "id_mode", "entity_types", "relations", "splits", "files", "checksum", "import_id",
              "lineage")  # fmt: skip


class _Appender(_Builder):
    """The import pipeline, reading only the new sources, into a copy of ``graph`` that keeps its layout."""

    def __init__(self, cfg: Config, root: str, progress: bool, graph: Graph) -> None:
        super().__init__(cfg, root, progress)
        self.graph = graph
        self.entry = len(graph.lineage)  # the lineage entry (= bucket segment) this append adds
        self.seed = int(graph.manifest.get("seed", cfg.graph.seed))
        self.writer = GraphWriter(root, segment=self.entry)
        self.old_counts = {name: t.count for name, t in graph.entity_types.items()}

    def _dictionaries(self) -> dict[str, EntityDictionary]:
        return {name: EntityDictionary.of(name, pa.array(self.graph.names(name), pa.large_string()))
                for name in self.tables}  # fmt: skip

    def _partition(self, counts: dict[str, int], dictionaries: dict[str, EntityDictionary] | None) -> dict:
        grown = {name for name in self.tables if counts[name] > self.old_counts[name]}
        self.writer.adopt(self.graph, grown)
        types = {}
        for name, table in self.tables.items():
            layout = PartitionLayout(counts[name], table.num_partitions)
            if name not in grown:
                types[name] = ShuffledType(name, layout, self.graph.position(name))
                continue
            perm = self._grown_perm(name, counts[name], table.num_partitions)
            names = None
            if dictionaries is not None:
                names = dictionaries[name].values.to_numpy(zero_copy_only=False).astype(object)
            position = self.writer.write_entities(name, perm, table.num_partitions, names)
            types[name] = ShuffledType(name, layout, position)
        return types

    def _grown_perm(self, name: str, count: int, parts: int) -> np.ndarray:
        """The grown type's ``perm``: each partition's old entities at their old offsets, then its new ones."""
        old = self.graph.entity_types[name]
        new = PartitionLayout(count, parts)
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode()), self.entry])
        fresh = old.count + rng.permutation(count - old.count).astype(np.int64)
        gained = np.diff(new.bounds) - np.diff(old.bounds)  # >= 0: a balanced layout's partitions only grow
        cut = np.concatenate([[0], np.cumsum(gained)])
        perm = self.graph.perm(name)
        pieces = []
        for p in range(parts):
            pieces += [perm[old.bounds[p] : old.bounds[p + 1]], fresh[cut[p] : cut[p + 1]]]
        return np.concatenate(pieces)

    def _finish(self, split: str, router: BucketRouter) -> dict[str, int]:
        block = max(1 << 20, self.g.chunk_rows)
        return router.finish(self.writer, split, _split_seed(self.seed, split) * 1000 + self.entry, block)

    def _manifest(self, counts: dict[str, int], splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
        old = self.graph.manifest
        merged = {s: dict(info) for s, info in old["splits"].items()}
        for split, info in splits.items():
            base = merged.get(split)
            if base is None:  # a split the import did not have
                merged[split] = {**info, "sources": [], "offset": 0, "limit": None}
                continue
            base["num_edges"] = int(base["num_edges"]) + info["num_edges"]
            had = base.get("per_relation") or [0] * len(info["per_relation"])
            base["per_relation"] = [int(a) + int(b) for a, b in zip(had, info["per_relation"])]
            base["has_weight"] = info["has_weight"]
            buckets = dict(base["buckets"])
            for key, n in info["buckets"].items():
                buckets[key] = int(buckets.get(key, 0)) + n
            base["buckets"] = buckets
        import_id = secrets.token_hex(8)
        entry = {
            "kind": "append",
            "import_id": import_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "entity_counts": dict(counts),
            "new_entities": {name: counts[name] - self.old_counts[name] for name in counts},
            "splits": {
                s: {k: info[k] for k in ("num_edges", "per_relation", "sources", "buckets")}
                for s, info in splits.items()
            },  # fmt: skip
            "tbg_version": __version__,
        }
        keep = {k: v for k, v in old.items() if k not in _REWRITTEN}
        keep["config_fingerprint"] = self.cfg.fingerprint(
            "model", "graph", "train_data", "validation_data", "test_data"
        )
        return self.writer.write_manifest(
            self.graph.id_mode,
            {name: (counts[name], t.num_partitions) for name, t in self.tables.items()},
            [(r.name, r.lhs, r.rhs) for r in self.relations],
            merged,
            **{**keep, "import_id": import_id, "lineage": [*self.graph.lineage, entry]},
        )

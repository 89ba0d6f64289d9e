"""The graph dir's ``manifest.json``: its structure check and its import lineage (docs/graph-format.md).

A graph grows by ``tbg import --append``: each import or append is one entry of the manifest's ``lineage``
(kind, import id, time, entity counts after it, and for an append the sources, edge counts and buckets it
added).  Bucket ``(i, j)`` of a split is then the concatenation of *segments*, one per lineage entry: the
edges that entry added (segment 0, the import's, is the split's bucket count less what the appends added).
Graph dirs written before lineage existed read as one import entry.  No file names here (graph.py has them).
"""

from __future__ import annotations

import re
from typing import Any

from tbg.errors import GraphError

LINEAGE = "lineage"
_JSON_NAMES = {dict: "an object", list: "an array", int: "an integer", str: "a string"}


def lineage(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's lineage; a dir written before lineage existed has one import entry made from its fields."""
    recorded = manifest.get(LINEAGE)
    if recorded:
        return recorded
    return [import_entry(manifest)]


def import_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    """The lineage entry of a plain import, from its manifest fields."""
    return {
        "kind": "import",
        "import_id": manifest.get("import_id"),
        "created": manifest.get("created"),
        "entity_counts": {name: int(t["count"]) for name, t in manifest["entity_types"].items()},
        "splits": {s: {"num_edges": int(info["num_edges"])} for s, info in manifest["splits"].items()},
    }


def segments(manifest: dict[str, Any], split: str, bucket: str) -> list[int]:
    """Edges of bucket ``"i_j"`` of ``split`` per lineage entry (their sum is the bucket's count)."""
    info = manifest["splits"].get(split)
    total = int(info["buckets"].get(bucket, 0)) if info is not None else 0
    entries = manifest.get(LINEAGE) or []
    if len(entries) <= 1:
        return [total]
    appended = [int(e.get("splits", {}).get(split, {}).get("buckets", {}).get(bucket, 0)) for e in entries[1:]]
    return [total - sum(appended), *appended]


def check_manifest(manifest: dict[str, Any], path: str) -> None:
    """The manifest's structure, key by key: a damaged or hand-edited manifest is one :class:`GraphError`
    naming the file and the key, never a KeyError later."""

    def need(value: Any, key: str, kind: type) -> Any:
        if not isinstance(value, kind) or isinstance(value, bool):
            raise GraphError(f"{path}: {key}: expected {_JSON_NAMES[kind]}, got {value!r:.40}")
        return value

    def get(obj: dict[str, Any], where: str, key: str, kind: type) -> Any:
        full = f"{where}.{key}" if where else key
        if key not in obj:
            raise GraphError(f"{path}: missing key {full!r}")
        value = need(obj[key], full, kind)
        if kind is int and value < 0:
            raise GraphError(f"{path}: {full}: must be >= 0, got {value}")
        return value

    def buckets(obj: dict[str, Any], where: str) -> dict[str, int]:
        out = get(obj, where, "buckets", dict)
        for bucket, count in out.items():
            if not re.fullmatch(r"\d+_\d+", bucket):
                raise GraphError(f"{path}: {where}.buckets: bad bucket key {bucket!r} (expected 'i_j')")
            need(count, f"{where}.buckets.{bucket}", int)
        return out

    get(manifest, "", "id_mode", str)
    for name, t in get(manifest, "", "entity_types", dict).items():
        need(t, f"entity_types.{name}", dict)
        get(t, f"entity_types.{name}", "count", int)
        if get(t, f"entity_types.{name}", "num_partitions", int) < 1:
            raise GraphError(f"{path}: entity_types.{name}.num_partitions: must be >= 1")
    for i, r in enumerate(get(manifest, "", "relations", list)):
        need(r, f"relations[{i}]", dict)
        for key in ("name", "lhs", "rhs"):
            if get(r, f"relations[{i}]", key, str) not in manifest["entity_types"] and key != "name":
                raise GraphError(f"{path}: relations[{i}].{key}: unknown entity type {r[key]!r}")
    for split, info in get(manifest, "", "splits", dict).items():
        where = f"splits.{split}"
        need(info, where, dict)
        get(info, where, "num_edges", int)
        buckets(info, where)
    if LINEAGE not in manifest:
        return
    entries = need(manifest[LINEAGE], LINEAGE, list)
    for k, entry in enumerate(entries):
        where = f"{LINEAGE}[{k}]"
        need(entry, where, dict)
        for name, count in get(entry, where, "entity_counts", dict).items():
            need(count, f"{where}.entity_counts.{name}", int)
        for split, info in get(entry, where, "splits", dict).items():
            need(info, f"{where}.splits.{split}", dict)
            if k and split not in manifest["splits"]:
                raise GraphError(f"{path}: {where}.splits: split {split!r} is not in the manifest's splits")
            if k:
                extra = set(buckets(info, f"{where}.splits.{split}")) - set(manifest["splits"][split]["buckets"])
                if extra:
                    raise GraphError(f"{path}: {where}.splits.{split}: buckets {sorted(extra)} are not in the split")
    for split, info in manifest["splits"].items():
        for bucket in info["buckets"]:
            if segments(manifest, split, bucket)[0] < 0:
                raise GraphError(f"{path}: {LINEAGE}: appends add more edges to {split} bucket {bucket} than it has")

"""Import pipeline: seconds per phase in the summary and the CLI table; the graph does not depend on how the
pipeline batches its work (chunk size, spill buffer, buckets loaded ahead)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from builders import child_env, random_index_edges, twhin_config, write_parquet, write_tsv
from readback import graph_multiset, source_multiset

from tbg.graph import Graph, GraphWriter, PartitionLayout
from tbg.importer import import_graph
from tbg.io.bucket_spill import BucketRouter, ShuffledType, record_dtype

RELS = [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("follow", "user", "user")]
SIZES = {"user": 50, "tweet": 30}
MAIN_THREAD = ("read_wait", "parse", "route", "spill_write", "spill_read", "shuffle", "bucket_write", "entities")


def _indices_config(tmp_path: Path, partitions: int):
    edges = random_index_edges(3000, 4, SIZES, RELS)
    write_parquet(tmp_path / "e.parquet", {k: edges[k] for k in ("lhs", "rel", "rhs")}, row_group_size=700)
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.parquet"),
        valid=str(tmp_path / "e.parquet"),
        partitions=partitions,
        overrides={"graph.chunk_rows": 400, "validation_data.limit": 100},
    )
    return cfg, edges


def test_summary_reports_seconds_by_phase(tmp_path: Path) -> None:
    cfg, edges = _indices_config(tmp_path, partitions=3)
    summary = import_graph(cfg, progress=False)
    phases = summary.phases
    assert set(MAIN_THREAD) | {"read", "manifest", "commit"} <= set(phases)
    assert all(v >= 0 for v in phases.values())
    # main-thread phases do not overlap each other, so they fit in the import's wall time
    assert sum(phases[k] for k in MAIN_THREAD) <= summary.seconds + 0.01
    assert graph_multiset(Graph(str(tmp_path / "g")), "train") == source_multiset(
        edges["lhs"], edges["rel"], edges["rhs"]
    )


def test_names_mode_phases_include_the_dictionary(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = [(f"u{a}", "fav", f"t{b}") for a, b in zip(rng.integers(0, 40, 900), rng.integers(0, 20, 900))]
    write_tsv(tmp_path / "e.tsv", rows)
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.tsv"),
        valid=str(tmp_path / "e.tsv"),
        types={"user": (None, 4, 1), "tweet": (None, 4, 1)},
        partitions=2,
        overrides={"graph.id_mode": "names", "graph.chunk_rows": 200},
    )
    phases = import_graph(cfg, progress=False).phases
    assert {"dictionary", "id_spill", "route", "bucket_write"} <= set(phases)


def test_cli_table_prints_the_phases(tmp_path: Path) -> None:
    cfg, _ = _indices_config(tmp_path, partitions=2)
    from tbg.config import dump_config

    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "tbg", "import", str(tmp_path / "c.yaml"), "--no-progress"],
        capture_output=True, text=True, env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("seconds by phase: "))
    assert "read " in line and "bucket_write " in line


def test_graph_does_not_depend_on_chunk_rows(tmp_path: Path) -> None:
    edges = random_index_edges(5000, 9, SIZES, RELS)
    write_parquet(tmp_path / "e.parquet", {k: edges[k] for k in ("lhs", "rel", "rhs")}, row_group_size=900)
    graphs = []
    for rows in (137, 5000):
        cfg = twhin_config(
            tmp_path / f"g{rows}",
            train=str(tmp_path / "e.parquet"),
            valid=str(tmp_path / "e.parquet"),
            partitions=3,
            overrides={"graph.chunk_rows": rows, "validation_data.limit": 50},
        )
        import_graph(cfg, progress=False)
        graphs.append(Graph(str(tmp_path / f"g{rows}")))
    a, b = graphs
    assert a.buckets("train") == b.buckets("train")
    for i, j in a.buckets("train"):
        x, y = a.read_bucket("train", i, j), b.read_bucket("train", i, j)
        assert (x.lhs == y.lhs).all() and (x.rhs == y.rhs).all() and (x.rel == y.rel).all()


def _routed(tmp_path: Path, name: str, buffer_bytes: int, block_edges: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    node = ShuffledType("node", PartitionLayout(1000, 3), rng.permutation(1000).astype(np.int64))
    router = BucketRouter(
        str(tmp_path / f"spill-{name}"), [node, node], [node, node],
        record_dtype(np.dtype(np.int32), np.dtype(np.int16), True), buffer_bytes=buffer_bytes,
    )  # fmt: skip
    for _ in range(7):
        n = 900
        lhs, rhs = rng.integers(0, 1000, n), rng.integers(0, 1000, n)
        router.add(lhs, rhs, rng.integers(0, 2, n).astype(np.int32), rng.random(n).astype(np.float32))
    writer = GraphWriter(str(tmp_path / name))
    counts = router.finish(writer, "train", seed=4, block_edges=block_edges)
    assert sum(counts.values()) == 7 * 900
    out = {}
    for key in counts:
        with h5py.File(writer.bucket_path("train", *map(int, key.split("_")))) as f:
            out[key] = np.stack([f[c][:].astype(np.float64) for c in ("lhs", "rhs", "rel", "weight")])
    return out


@pytest.mark.parametrize("block_edges", [10_000, 300])  # in memory / the external two-pass shuffle
def test_buckets_do_not_depend_on_the_spill_buffer(tmp_path: Path, block_edges: int) -> None:
    flushed_often = _routed(tmp_path, "small", buffer_bytes=1000, block_edges=block_edges)
    held = _routed(tmp_path, "large", buffer_bytes=1 << 30, block_edges=block_edges)
    assert flushed_often.keys() == held.keys() and len(held) == 9
    for key in held:
        assert np.array_equal(flushed_often[key], held[key])

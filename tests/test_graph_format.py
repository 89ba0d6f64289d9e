"""The graph-dir format through its public reader and writer, and the torch-free import path."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from builders import child_env

from tbg.graph import EdgeArrays, Graph, GraphWriter, PartitionLayout


@pytest.mark.parametrize(("count", "parts"), [(10, 1), (10, 3), (2, 4), (0, 2), (7, 7)])
def test_layout_locate_inverts_bounds(count: int, parts: int) -> None:
    layout = PartitionLayout(count, parts)
    sizes = [layout.partition_size(p) for p in range(parts)]
    assert sum(sizes) == count and max(sizes) - min(sizes) <= 1
    part, off = layout.locate(np.arange(count))
    assert (layout.bounds[part] + off == np.arange(count)).all()
    assert all(0 <= o < sizes[p] for p, o in zip(part.tolist(), off.tolist()))


def _write(root: str) -> np.ndarray:
    writer = GraphWriter(root)
    perm = np.random.default_rng(0).permutation(9).astype(np.int64)
    writer.write_entities("n", perm, 2, np.array([f"e{i}" for i in range(9)], dtype=object))
    edges = EdgeArrays(np.array([0, 3], np.int32), np.array([1, 2], np.int32), np.array([0, 0], np.int16))
    writer.write_bucket("train", 0, 1, edges)
    writer.write_manifest("names", {"n": (9, 2)}, [("r", "n", "n")], {"train": {"num_edges": 2, "buckets": {"0_1": 2}}})
    return perm


def test_writer_and_reader_agree(tmp_path) -> None:
    perm = _write(str(tmp_path))
    g = Graph(str(tmp_path))
    assert g.splits == ["train"] and g.buckets("train") == [(0, 1)] and g.num_edges("train") == 2
    assert (g.perm("n") == perm).all()
    part, off = g.locate("n", perm)
    assert (g.entity_types["n"].bounds[part] + off == np.arange(9)).all()
    assert list(g.names("n", np.array([4]))) == ["e4"]
    block = g.read_bucket("train", 0, 1)
    assert block.lhs.tolist() == [0, 3] and block.rhs.tolist() == [1, 2] and block.weight is None


def test_old_graph_dirs_with_a_bounds_dataset_still_load(tmp_path) -> None:
    perm = _write(str(tmp_path))
    with h5py.File(tmp_path / "entities" / "n.h5", "r+") as f:  # what earlier importers also wrote
        f.create_dataset("bounds", data=np.array([0, 5, 9], np.int64))
    manifest = json.loads((tmp_path / "manifest.json").read_text())  # ... with a format 1 manifest
    for key in ("files", "checksum"):
        del manifest[key]
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    g = Graph(str(tmp_path))
    assert (g.partition_ids("n", 1) == perm[5:]).all()


def test_import_export_and_consistency_do_not_import_torch() -> None:
    code = "import sys, tbg.export, tbg.importer, tbg.consistency; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env=child_env()).returncode == 0

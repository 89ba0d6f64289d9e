"""Importer: lossless round trip, balanced partitions, windows, determinism, overwrite, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from builders import child_env, random_index_edges, twhin_config, write_parquet, write_tsv
from readback import graph_multiset, source_multiset

from tbg.errors import InputError
from tbg.graph import Graph
from tbg.importer import import_graph

RELS = [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("follow", "user", "user")]
SIZES = {"user": 50, "tweet": 30}


def _leftovers(graph_dir: Path) -> list[str]:
    return [p.name for p in graph_dir.parent.iterdir() if p.name.startswith(graph_dir.name + ".")]


@pytest.mark.parametrize("partitions", [1, 3])
def test_indices_parquet_roundtrip(tmp_path: Path, partitions: int) -> None:
    edges = random_index_edges(3000, 1, SIZES, RELS)
    write_parquet(tmp_path / "src" / "a.parquet", {k: v[:1700] for k, v in edges.items()}, row_group_size=500)
    write_parquet(tmp_path / "src" / "b.parquet", {k: v[1700:] for k, v in edges.items()}, row_group_size=500)
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "src" / "*.parquet"),
        valid=str(tmp_path / "src" / "*.parquet"),
        partitions=partitions,
        overrides={
            "graph.columns": {"lhs": "lhs", "rel": "rel", "rhs": "rhs", "weight": "weight"},
            "graph.chunk_rows": 400,
            "train_data.limit": 2500,
            "validation_data.offset": 2500,
        },
    )
    summary = import_graph(cfg, progress=False)
    g = Graph(str(tmp_path / "g"))
    assert summary.splits == {"train": 2500, "valid": 500}
    for split, sl in (("train", slice(0, 2500)), ("valid", slice(2500, None))):
        want = source_multiset(edges["lhs"][sl], edges["rel"][sl], edges["rhs"][sl], edges["weight"][sl])
        assert graph_multiset(g, split) == want
        info = g.split_info(split)
        assert info["per_relation"] == np.bincount(edges["rel"][sl], minlength=3).tolist()
        assert sum(info["buckets"].values()) == info["num_edges"]
    assert g.entity_types["user"].count == 50 and g.entity_types["tweet"].count == 30
    with h5py.File(g.bucket_path("train", *g.buckets("train")[0])) as f:
        assert f["lhs"].dtype == np.int32 and f["rel"].dtype == np.int16 and f["weight"].dtype == np.float32
    assert _leftovers(tmp_path / "g") == []


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("header", [False, True])
def test_names_tsv_roundtrip(tmp_path: Path, partitions: int, header: bool) -> None:
    rng = np.random.default_rng(7)
    n = 2000
    rel = rng.integers(0, 3, n)
    users = np.array([f"user/{k}" for k in range(40)] + ["ünïcödé", "a b"])
    tweets = np.array([f"t{k}" for k in range(25)])
    lhs = users[rng.integers(0, len(users), n)]
    rhs = np.where(rel == 2, users[rng.integers(0, len(users), n)], tweets[rng.integers(0, len(tweets), n)])
    weight = np.round(rng.random(n), 3)
    names = np.array([r[0] for r in RELS])[rel]
    rows = list(zip(lhs, names, rhs, weight))
    hdr = ["src", "relation", "dst", "w"] if header else None
    write_tsv(tmp_path / "train.tsv", rows[:1500], hdr)
    write_tsv(tmp_path / "valid.tsv", rows[1500:1800], hdr)
    write_tsv(tmp_path / "test.tsv", rows[1800:], hdr)
    columns = {"lhs": "src", "rel": "relation", "rhs": "dst", "weight": "w"} if header else {
        "lhs": 0, "rel": 1, "rhs": 2, "weight": 3}  # fmt: skip
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "train.tsv"),
        valid=str(tmp_path / "valid.tsv"),
        test=str(tmp_path / "test.tsv"),
        types={"user": (None, 4, 1), "tweet": (None, 4, 1)},
        partitions=partitions,
        overrides={"graph.id_mode": "names", "graph.header": header, "graph.columns": columns, "graph.chunk_rows": 300},
    )
    import_graph(cfg, progress=False)
    g = Graph(str(tmp_path / "g"))
    assert g.splits == ["train", "valid", "test"]
    for split, sl in (("train", slice(0, 1500)), ("valid", slice(1500, 1800)), ("test", slice(1800, None))):
        assert graph_multiset(g, split, names=True) == source_multiset(lhs[sl], rel[sl], rhs[sl], weight[sl])
    assert g.entity_types["user"].count == len(set(lhs) | set(rhs[rel == 2]))
    assert g.entity_types["tweet"].count == len(set(rhs[rel != 2]))


def test_partitions_balanced_and_mapping_consistent(tmp_path: Path) -> None:
    edges = random_index_edges(500, 2, {"user": 1003, "tweet": 30}, RELS)
    write_parquet(tmp_path / "e.parquet", {k: edges[k] for k in ("lhs", "rel", "rhs")})
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.parquet"),
        valid=str(tmp_path / "e.parquet"),
        types={"user": (1003, 4, 1), "tweet": (30, 4, 1)},
        partitions=4,
    )
    import_graph(cfg, progress=False)
    g = Graph(str(tmp_path / "g"))
    for name, count in (("user", 1003), ("tweet", 30)):
        t = g.entity_types[name]
        sizes = [t.partition_size(p) for p in range(4)]
        assert sum(sizes) == count and max(sizes) - min(sizes) <= 1
        perm, pos = g.perm(name), g.position(name)
        assert sorted(perm.tolist()) == list(range(count))
        assert (pos[perm] == np.arange(count)).all()
        part, off = g.locate(name, perm)
        assert (part == np.repeat(np.arange(4), sizes)).all()
        assert not (perm == np.arange(count)).all()  # shuffled
    assert g.num_lhs_partitions == 4 and g.num_rhs_partitions == 4


def test_seeded_and_buckets_shuffled(tmp_path: Path) -> None:
    n = 4000
    cols = {"lhs": np.arange(n) % 50, "rel": np.zeros(n, np.int64), "rhs": np.arange(n) % 30}
    write_parquet(tmp_path / "e.parquet", cols)

    def run(name: str, seed: int) -> list[np.ndarray]:
        cfg = twhin_config(
            tmp_path / name,
            train=str(tmp_path / "e.parquet"),
            valid=str(tmp_path / "e.parquet"),
            overrides={"graph.seed": seed},
        )
        import_graph(cfg, progress=False)
        g = Graph(str(tmp_path / name))
        e = g.read_bucket("train", 0, 0)
        return [e.lhs, e.rhs, g.perm("user")]

    a, b, c = run("g1", 5), run("g2", 5), run("g3", 6)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, c))
    lhs_dense = Graph(str(tmp_path / "g1")).perm("user")[a[0]]
    assert not (lhs_dense == cols["lhs"]).all()  # bucket order is not the source order


def test_overwrite(tmp_path: Path) -> None:
    edges = random_index_edges(300, 3, SIZES, RELS)
    write_parquet(tmp_path / "e.parquet", {k: edges[k] for k in ("lhs", "rel", "rhs")})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    import_graph(cfg, progress=False)
    manifest = (tmp_path / "g" / "manifest.json").read_text()
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        import_graph(cfg, progress=False)
    assert (tmp_path / "g" / "manifest.json").read_text() == manifest
    cfg2 = twhin_config(
        tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"), partitions=2
    )
    import_graph(cfg2, overwrite=True, progress=False)
    assert Graph(str(tmp_path / "g")).entity_types["user"].num_partitions == 2
    assert _leftovers(tmp_path / "g") == []
    # a failed overwrite keeps the old graph
    cfg3 = twhin_config(tmp_path / "g", train=str(tmp_path / "missing*.parquet"), valid=str(tmp_path / "e.parquet"))
    with pytest.raises(InputError):
        import_graph(cfg3, overwrite=True, progress=False)
    assert Graph(str(tmp_path / "g")).entity_types["user"].num_partitions == 2
    assert _leftovers(tmp_path / "g") == []


def test_manifest_fields(tmp_path: Path) -> None:
    edges = random_index_edges(100, 4, SIZES, RELS)
    write_parquet(tmp_path / "e.parquet", {k: edges[k] for k in ("lhs", "rel", "rhs")})
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.parquet"),
        valid=str(tmp_path / "e.parquet"),
        overrides={"validation_data.offset": 90, "validation_data.limit": 10},
    )
    import_graph(cfg, progress=False)
    m = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert m["format_version"] == 2 and m["id_mode"] == "indices" and m["seed"] == 0
    one = {"num_partitions": 1}
    assert m["entity_types"] == {"user": {"count": 50, **one}, "tweet": {"count": 30, **one}}
    assert [r["name"] for r in m["relations"]] == ["fav", "reply", "follow"]
    assert sorted(m["files"]) == [
        "entities/tweet.h5",
        "entities/user.h5",
        *(f"{s}/edges_0_0.h5" for s in ("train", "valid")),
    ]
    valid = m["splits"]["valid"]
    assert valid["num_edges"] == 10 and valid["has_weight"] is False
    assert valid["sources"] == [{"path": str(tmp_path / "e.parquet"), "size": os.path.getsize(tmp_path / "e.parquet"),
                                 "rows": 10}]  # fmt: skip
    assert m["config_fingerprint"] == cfg.fingerprint("model", "graph", "train_data", "validation_data", "test_data")
    assert "created" in m and "tbg_version" in m


def test_cli_import_does_not_import_torch(tmp_path: Path) -> None:
    edges = random_index_edges(200, 5, SIZES, RELS)
    write_parquet(tmp_path / "e.parquet", {k: edges[k] for k in ("lhs", "rel", "rhs")})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    from tbg.config import dump_config

    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    code = (
        "import sys; from tbg.cli import main; rc = main(['import', sys.argv[1], '--no-progress']);"
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    run = {"capture_output": True, "text": True, "env": child_env(), "cwd": tmp_path}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.yaml")], **run)
    assert proc.returncode == 0, proc.stderr
    assert "edges/s" in proc.stdout and "train" in proc.stdout
    again = subprocess.run([sys.executable, "-m", "tbg", "import", str(tmp_path / "c.yaml"), "--no-progress"], **run)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "--overwrite" in again.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "tbg", "import", str(tmp_path / "c.yaml"), "--overwrite", "--splits", "train"], **run
    )
    assert ok.returncode == 0, ok.stderr
    assert Graph(str(tmp_path / "g")).splits == ["train"]


@pytest.mark.parametrize("again", [False, True], ids=["new", "overwrite"])
def test_every_folder_of_the_graph_dir_is_on_disk_before_it_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, again: bool
) -> None:
    """A crash right after an import finds every file of the graph dir: each folder's entries are flushed
    before the temp dir is renamed, and the parent's after."""
    edges = random_index_edges(600, 2, SIZES, RELS)
    write_parquet(tmp_path / "src" / "a.parquet", edges)
    columns = {"lhs": "lhs", "rel": "rel", "rhs": "rhs", "weight": "weight"}
    src = str(tmp_path / "src" / "a.parquet")
    overrides = {"graph.columns": columns, "train_data.limit": 500, "validation_data.offset": 500}
    cfg = twhin_config(tmp_path / "g", train=src, valid=src, partitions=3, overrides=overrides)
    if again:
        import_graph(cfg, progress=False)
    synced: list[str] = []
    renames: list[tuple[str, str, list[str]]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def rename(src, dst) -> None:  # noqa: ANN001
        renames.append((str(src), str(dst), list(synced)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    import_graph(cfg, progress=False, overwrite=again)
    target = str(tmp_path / "g")
    tmp, _, before = next(r for r in renames if r[1] == target)
    folders = {os.path.normpath(os.path.join(tmp, os.path.relpath(root, target))) for root, _, _ in os.walk(target)}
    assert len(folders) > 2 and folders <= set(before)  # the dir, entities/, train/ (as written, in the temp dir)
    assert str(tmp_path) in synced[len(before) :]  # the parent, after the rename

"""Export round trips (TSV, Parquet, NumPy), overwrite refusal, atomicity, and no torch on the export path."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from builders import child_env, integer_model, make_config, write_checkpoint, write_graph

from tbg import export as ex
from tbg.errors import CheckpointError, ConsistencyError, GraphError

TYPES = {"user": (41, 6, 3), "item": (17, 6, 1)}
RELS = [
    ("likes", "user", "item", "affine"),
    ("cx", "user", "user", "complex_diagonal"),
    ("d", "item", "item", "diagonal"),
]


# no budget: each type is one block; 5120 bytes: blocks of 10 rows (4 * 6 + 8 bytes a vector and its id, 96 its
# name: a quarter of the budget), shards read in slices of 10 rows, so the rows of every block come from several
# partitions through the spill file (tbg/export_blocks.py), and names are read 10 at a time
BUDGETS = [None, "5120"]


@pytest.fixture(params=BUDGETS, ids=["one_block", "budget_blocks"])
def trained(tmp_path, request):
    """A P=3/P=1 graph with float embeddings and random relation parameters, committed as version 1."""
    over = {} if request.param is None else {"runtime.memory_budget": request.param}
    cfg = make_config(
        tmp_path / "run" / "graph", save_dir=tmp_path / "run", types=TYPES, relations=RELS, overrides=over
    )
    rng = np.random.default_rng(0)
    n = 50
    lhs, rhs, rel = rng.integers(0, 17, n), rng.integers(0, 17, n), rng.integers(0, 3, n)
    perms = write_graph(cfg, {"train": (lhs, rel, rhs)}, names=True)
    dense = {
        t.name: rng.standard_normal((t.num_embeddings, t.embedding_dim)).astype(np.float32)
        for t in cfg.model.embeddings.tables
    }
    model = integer_model(cfg, 1, -5, 6)
    write_checkpoint(cfg, perms, dense, model)
    names = {t: np.array([f"{t}/é{i}" for i in range(TYPES[t][0])]) for t in TYPES}
    return cfg, dense, model, names, tmp_path


def expected_params(model):
    return {
        f"{rel}/{side}/{name}": t.numpy()
        for rel_i, rel in enumerate(r[0] for r in RELS)
        for key, t in model.export_relation(rel_i).items()
        for side, name in [key.split(".")]
    }


def test_tsv_round_trip(trained):
    cfg, dense, model, names, tmp = trained
    out = tmp / "tsv"
    ex.export(cfg, "tsv", str(out))
    for t in TYPES:
        lines = (out / f"{t}_embeddings.tsv").read_text(encoding="utf-8").splitlines()
        assert [ln.split("\t")[0] for ln in lines] == list(names[t])
        got = np.array([[float(v) for v in ln.split("\t")[1:]] for ln in lines], dtype=np.float32)
        np.testing.assert_array_equal(got, dense[t])  # bit-exact
    rows = [ln.split("\t") for ln in (out / "relation_parameters.tsv").read_text().splitlines()]
    got = {f"{r[0]}/{r[1]}/{r[2]}": np.array([float(v) for v in r[3:]], dtype=np.float32) for r in rows}
    want = expected_params(model)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k].ravel())
    assert json.loads((out / "export.json").read_text())["checkpoint_version"] == 1


def test_parquet_round_trip(trained):
    cfg, dense, model, names, tmp = trained
    out = tmp / "pq"
    ex.export(cfg, "parquet", str(out))
    for t in TYPES:
        table = pq.read_table(out / f"{t}.parquet")
        assert str(table.schema.field("vector").type) == "fixed_size_list<element: float>[6]"
        assert table.column("name").to_pylist() == list(names[t])
        assert set(table.column("type").to_pylist()) == {t}
        vec = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
        np.testing.assert_array_equal(vec, dense[t])
    rel = pq.read_table(out / "relation_parameters.parquet").to_pylist()
    want = expected_params(model)
    assert {f"{r['relation']}/{r['side']}/{r['param']}" for r in rel} == set(want)
    for r in rel:
        w = want[f"{r['relation']}/{r['side']}/{r['param']}"]
        assert r["shape"] == list(w.shape)
        np.testing.assert_array_equal(np.array(r["values"], dtype=np.float32), w.ravel())


def test_npy_round_trip(trained):
    cfg, dense, model, names, tmp = trained
    out = tmp / "npy"
    ex.export(cfg, "npy", str(out))
    for t in TYPES:
        arr = np.load(out / f"{t}.npy")
        assert arr.dtype == np.float32
        np.testing.assert_array_equal(arr, dense[t])
        assert (out / f"{t}_names.txt").read_text(encoding="utf-8").splitlines() == list(names[t])
    with np.load(out / "relations.npz") as z:
        want = expected_params(model)
        assert set(z.files) == set(want)
        for k in want:
            np.testing.assert_array_equal(z[k], want[k])


@pytest.mark.parametrize("fmt", ["tsv", "npy"])
def test_damaged_names_found_after_the_last_block_leave_nothing(trained, fmt):
    """Names are read a block at a time and their checksum is checked after the last one: a damaged dataset is
    an error and the export leaves nothing behind, whatever it wrote before."""
    cfg, dense, model, names, tmp = trained
    path = tmp / "run" / "graph" / "entities" / "user.h5"
    with h5py.File(path, "r+") as f:  # same length, the last name changed: only the checksum can tell
        f["names"][-1] = "someone else"
    out = tmp / "damaged"
    with pytest.raises(GraphError, match="user.h5.*names"):
        ex.export(cfg, fmt, str(out))
    assert not out.exists() and not list(tmp.glob("damaged*"))


def test_refuses_overwrite_and_replaces_with_flag(trained):
    cfg, dense, model, names, tmp = trained
    out = tmp / "o"
    ex.export(cfg, "npy", str(out))
    (out / "marker").write_text("keep")
    with pytest.raises(ex.ExportError, match="already exists"):
        ex.export(cfg, "tsv", str(out))
    assert (out / "marker").exists() and not (out / "user_embeddings.tsv").exists()
    ex.export(cfg, "tsv", str(out), overwrite=True)
    assert not (out / "marker").exists() and (out / "user_embeddings.tsv").exists()
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("o.")) == []  # no temp/old dirs left


def test_failure_leaves_nothing(trained, monkeypatch):
    cfg, dense, model, names, tmp = trained
    out = tmp / "fail"

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(ex, "write_tsv_relations", boom)
    with pytest.raises(OSError):
        ex.export(cfg, "tsv", str(out))
    assert [p.name for p in tmp.iterdir() if p.name.startswith("fail")] == []


def test_tsv_escapes_special_names(tmp_path):
    """TAB, newline, CR and backslash in names are written as backslash escapes: one line per entity."""
    special = ["a\tb", "c\nd", "e\\f", "g\rh", "plain"]
    cfg = make_config(
        tmp_path / "g", save_dir=tmp_path / "run", types={"n": (5, 2, 1)}, relations=[("r", "n", "n", "none")]
    )
    perms = write_graph(cfg, {"train": (np.arange(5), np.zeros(5, int), np.arange(5)[::-1])}, names={"n": special})
    write_checkpoint(cfg, perms, {"n": np.zeros((5, 2), np.float32)}, integer_model(cfg, 0))
    ex.export(cfg, "tsv", str(tmp_path / "t"))
    lines = (tmp_path / "t" / "n_embeddings.tsv").read_bytes().decode().split("\n")
    assert [line.split("\t")[0] for line in lines if line] == ["a\\tb", "c\\nd", "e\\\\f", "g\\rh", "plain"]


def test_export_does_not_import_torch(trained):
    cfg, dense, model, names, tmp = trained
    from tbg.config import dump_config

    path = tmp / "cfg.yaml"
    path.write_text(dump_config(cfg))
    code = (
        "import sys; from tbg.cli import main; "
        f"rc = main(['export', {str(path)!r}, '--format', 'npy', '--out', {str(tmp / 'cli')!r}]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), cwd=tmp)
    assert res.returncode == 0, res.stderr
    assert np.load(tmp / "cli" / "user.npy").shape == (41, 6)


def test_missing_checkpoint_and_mismatch(trained):
    cfg, dense, model, names, tmp = trained
    with pytest.raises(CheckpointError, match="not found"):
        ex.export(cfg, "npy", str(tmp / "x"), checkpoint=str(tmp / "nope"))
    types = {k: (c, 8, p) for k, (c, _d, p) in TYPES.items()}
    bad = make_config(cfg.graph_dir, save_dir=cfg.training.save_dir, types=types, relations=RELS)
    with pytest.raises(ConsistencyError, match=r"tables\[\d\]\.embedding_dim: 8 but the checkpoint .* trained with 6"):
        ex.export(bad, "npy", str(tmp / "x"))
    assert not (tmp / "x").exists()


def test_indices_mode_names_are_dense_ids(tmp_path):
    cfg = make_config(
        tmp_path / "idx" / "graph",
        save_dir=tmp_path / "idx",
        types={"n": (9, 4, 2)},
        relations=[("r", "n", "n", "translation")],
    )
    rng = np.random.default_rng(2)
    perms = write_graph(cfg, {"train": (rng.integers(0, 9, 5), np.zeros(5, int), rng.integers(0, 9, 5))})
    dense = {"n": rng.standard_normal((9, 4)).astype(np.float32)}
    write_checkpoint(cfg, perms, dense, integer_model(cfg, 0))
    ex.export(cfg, "tsv", str(tmp_path / "t"))
    lines = (tmp_path / "t" / "n_embeddings.tsv").read_text().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [str(i) for i in range(9)]
    np.testing.assert_array_equal(np.array([ln.split("\t")[1:] for ln in lines], dtype=np.float32), dense["n"])

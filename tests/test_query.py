"""Neighbours and predictions: top-k equals brute-force scoring through the model's own score function."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from builders import child_env, make_config, write_checkpoint, write_graph

import tbg
from tbg.config import dump_config
from tbg.errors import QueryError
from tbg.model.scoring import RelationModel
from tbg.query.engine import Prediction, QueryEngine

pytest.importorskip("faiss")

OPERATORS = ["translation", "diagonal", "linear", "affine", "complex_diagonal", "none"]


def _model(cfg, seed: int) -> RelationModel:
    """Relation parameters away from the identity (float noise), so every operator matters."""
    gen = torch.Generator().manual_seed(seed)
    model = RelationModel.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    return model


def _build(tmp_path, comparator="dot", sides="both", parts=(1, 1), counts=(60, 45), seed=0):
    types = {"user": (counts[0], 8, parts[0]), "item": (counts[1], 8, parts[1])}
    rels = [(f"r_{op}", "user", "item", op) for op in OPERATORS] + [("ii", "item", "item", "translation")]
    over = {"model.comparator": comparator, "model.relation_sides": sides, "runtime.num_threads": None}
    cfg = make_config(
        tmp_path / "run" / "graph", save_dir=tmp_path / "run", types=types, relations=rels, overrides=over
    )
    rng = np.random.default_rng(seed)
    n = 400
    lhs_t = rng.integers(0, counts[0], n)
    rel = rng.integers(0, len(rels), n)
    lhs = np.where(rel == len(rels) - 1, rng.integers(0, counts[1], n), lhs_t)
    splits = {"train": (lhs, rel, rng.integers(0, counts[1], n))}
    perms = write_graph(cfg, splits, seed=seed, names=True)
    dense = {t.name: rng.standard_normal((t.num_embeddings, 8)).astype(np.float32) for t in cfg.model.embeddings.tables}
    model = _model(cfg, seed)
    write_checkpoint(cfg, perms, dense, model)
    return cfg, dense, model, splits


def _name(t, i):
    return f"{t}/é{i}"


def _brute_predict(cfg, dense, model, rel, side, ids, k, known=None):
    """Top-k (names, scores) per query through RelationModel.score_candidates (what tbg eval computes)."""
    spec = cfg.model.relations[rel]
    target = "rhs" if side == "lhs" else "lhs"
    ctype = getattr(spec, target)
    with torch.no_grad():
        scores = model.score_candidates(
            target, torch.from_numpy(dense[getattr(spec, side)][ids]), rel, torch.from_numpy(dense[ctype])
        ).numpy()
    out = []
    for row, i in zip(scores, ids):
        if known is not None:
            row = row.copy()
            row[sorted(known.get(int(i), ()))] = -np.inf
        order = np.argsort(-row, kind="stable")[:k]
        order = order[np.isfinite(row[order])]
        out.append(([_name(ctype, j) for j in order], row[order]))
    return out


def _check(answers, expected):
    for ans, (names, scores) in zip(answers, expected):
        got = [r["name"] for r in ans["results"]]
        assert got == names
        np.testing.assert_allclose([r["score"] for r in ans["results"]], scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("comparator", ["dot", "cos", "l2", "squared_l2"])
@pytest.mark.parametrize("sides", ["both", "rhs"])
@pytest.mark.parametrize("parts", [(1, 1), (3, 3)])
def test_predict_equals_brute_force(tmp_path, comparator, sides, parts):
    cfg, dense, model, _ = _build(tmp_path, comparator, sides, parts)
    engine = QueryEngine.open(cfg)
    ids = np.arange(0, 45, 4)
    for rel, spec in enumerate(cfg.model.relations):
        for side in ("lhs", "rhs"):
            qids = ids[ids < dense[getattr(spec, side)].shape[0]]
            queries = [Prediction(spec.name, side, _name(getattr(spec, side), i)) for i in qids]
            answers = engine.predict_batch(queries, k=7)
            _check(answers, _brute_predict(cfg, dense, model, rel, side, qids, 7))
            assert all(a["query"][side]["name"] == q.name for a, q in zip(answers, queries))


def test_predict_exclude_known_and_single(tmp_path):
    cfg, dense, model, splits = _build(tmp_path, "dot", "both", (2, 2))
    trained = tbg.load(cfg.training.save_dir)
    engine = trained.queries()
    lhs, rel, rhs = splits["train"]
    r = 0
    known = {}
    for a, b in zip(lhs[rel == r], rhs[rel == r]):
        known.setdefault(int(a), set()).add(int(b))
    ids = np.array(sorted(known))
    answers = engine.predict_batch([Prediction("r_translation", "lhs", _name("user", i)) for i in ids], 10, True)
    _check(answers, _brute_predict(cfg, dense, model, r, "lhs", ids, 10, known))
    one = trained.predict("r_translation", lhs=_name("user", int(ids[0])), k=10, exclude_known=True)
    assert one == answers[0]
    # the scores are the model's: tbg.load's score function gives the same numbers for those edges
    names = [r["name"] for r in one["results"]]
    again = trained.score([_name("user", int(ids[0]))] * len(names), "r_translation", names)
    np.testing.assert_allclose([r["score"] for r in one["results"]], again, rtol=1e-5, atol=1e-5)
    assert not {res["name"] for res in one["results"]} & {_name("item", j) for j in known[int(ids[0])]}


@pytest.mark.parametrize("comparator", ["dot", "cos", "l2"])
def test_neighbors_equal_brute_force(tmp_path, comparator):
    cfg, dense, model, _ = _build(tmp_path, comparator, "both", (3, 1))
    trained = tbg.load(cfg.training.save_dir)
    ids = [0, 5, 59]
    answers = trained.neighbors("user", [_name("user", i) for i in ids], k=5)
    comp = model.comparator
    with torch.no_grad():
        table = comp.prepare(torch.from_numpy(dense["user"]))
        scores = comp.matrix(table[ids], table).numpy()
    for ans, i, row in zip(answers, ids, scores):
        row[i] = -np.inf  # never the entity itself
        order = np.argsort(-row, kind="stable")[:5]
        assert [r["name"] for r in ans["results"]] == [_name("user", j) for j in order]
        np.testing.assert_allclose([r["score"] for r in ans["results"]], row[order], rtol=1e-5, atol=1e-5)
    assert trained.neighbors("user", _name("user", 0), k=5) == answers[0]


def test_ivf_index_with_all_lists_is_exact(tmp_path):
    cfg, dense, model, _ = _build(tmp_path, "dot", "both", (1, 2), counts=(60, 3000))
    engine = QueryEngine.open(cfg, index="ivf", nlist=16, nprobe=16)
    ids = np.arange(0, 60, 7)
    answers = engine.predict_batch([Prediction("r_linear", "lhs", _name("user", i)) for i in ids], k=10)
    expected = _brute_predict(cfg, dense, model, 2, "lhs", ids, 10)
    _check(answers, expected)
    cache = tmp_path / "run" / "query_index"
    metas = [json.loads(p.read_text()) for p in sorted(cache.glob("*/item_*.json"))]
    assert [m["spec"] for m in metas] == [{"kind": "ivf", "metric": "ip", "nlist": 16}] * 2
    # each partition's default nprobe was measured at build time to reach recall@10 >= 0.95 on its own vectors
    assert all(1 <= m["nprobe"] <= 16 and m["recall"] >= 0.95 for m in metas)
    calibrated = QueryEngine.open(cfg, index="ivf", nlist=16).predict_batch(
        [Prediction("r_linear", "lhs", _name("user", i)) for i in ids], k=10
    )
    recall = np.mean([len({r["name"] for r in a["results"]} & set(e)) / 10 for a, (e, _) in zip(calibrated, expected)])
    assert recall >= 0.9


def _cache_files(tmp_path):
    return sorted((tmp_path / "run" / "query_index").glob("*/*"))


def test_index_cache_reused_and_corruption_rebuilt(tmp_path, caplog):
    cfg, dense, model, _ = _build(tmp_path, "cos", "both", (2, 1), counts=(60, 400))
    ids = np.arange(10)
    queries = [Prediction("r_affine", "lhs", _name("user", i)) for i in ids]

    def ask():
        return QueryEngine.open(cfg, index="ivf", nlist=8, nprobe=8).predict_batch(queries, k=5)

    first = ask()
    _check(first, _brute_predict(cfg, dense, model, 3, "lhs", ids, 5))
    files = _cache_files(tmp_path)
    indexes = [p for p in files if p.suffix == ".faiss"]
    assert len(indexes) == 1 and [p.suffix for p in files].count(".json") == 1  # item has one partition
    stamp = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    # a second process-like engine reuses the cached index: same files, untouched, same answers
    assert ask() == first
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in _cache_files(tmp_path)] == stamp
    # flip bytes in the index: detected by its checksum, reported, rebuilt, answers unchanged
    data = bytearray(indexes[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    indexes[0].write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tbg.query"):
        assert ask() == first
    assert "corrupt (checksum mismatch); rebuilding" in caplog.text
    # a new checkpoint version gets its own cache dir
    perms = _perms(cfg)
    write_checkpoint(cfg, perms, dense, model, version=2)
    assert ask() == first
    cache = tmp_path / "run" / "query_index"
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["v0000000001", "v0000000002"]
    old_v2 = next(cache.glob("v0000000002-*")).name
    # as after `tbg train --fresh`: both versions gone, a different v2 committed; its index is built anew
    # (never the old v2's), and the cache dirs of checkpoints that no longer exist are removed
    for version in ("v0000000001", "v0000000002"):
        shutil.rmtree(tmp_path / "run" / "checkpoints" / version)
    other = {t: np.random.default_rng(9).standard_normal(v.shape).astype(np.float32) for t, v in dense.items()}
    write_checkpoint(cfg, perms, other, model, version=2)
    _check(ask(), _brute_predict(cfg, other, model, 3, "lhs", ids, 5))
    (now,) = [p.name for p in cache.iterdir()]
    assert now.startswith("v0000000002-") and now != old_v2


def _perms(cfg):
    from tbg.graph import Graph

    graph = Graph(cfg.graph_dir)
    return {t: graph.perm(t) for t in graph.entity_types}


def test_unknown_names_are_query_errors(tmp_path):
    cfg, *_ = _build(tmp_path)
    engine = QueryEngine.open(cfg)
    with pytest.raises(QueryError, match="^unknown user 'nobody'$"):
        engine.predict("r_linear", lhs="nobody")
    with pytest.raises(QueryError, match="unknown relation 'nope'"):
        engine.predict("nope", lhs=_name("user", 1))
    with pytest.raises(QueryError, match="unknown entity type 'usr'"):
        engine.neighbors("usr", "x")


def _tbg(*args, cwd):
    """``python -m tbg`` with this checkout's tbg first on the path, from an unrelated working dir."""
    return subprocess.run(
        [sys.executable, "-m", "tbg", *args], capture_output=True, text=True, cwd=cwd, env=child_env()
    )


def _main(capsys, *args):
    from tbg.cli import main

    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_json_batch_and_errors(tmp_path, capsys):
    cfg, dense, model, _ = _build(tmp_path, "l2", "rhs", (2, 1))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    u3 = _name("user", 3)
    # the console entry point in a fresh process, from an unrelated working dir
    res = _tbg(
        "predict", str(cfg_path), "--lhs", f"user:{u3}", "--relation", "r_diagonal", "-k", "4", "--json", cwd=elsewhere
    )
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    got = json.loads(line)
    assert got["query"] == {"lhs": {"type": "user", "name": u3}, "relation": "r_diagonal"}
    _check([got], _brute_predict(cfg, dense, model, 1, "lhs", np.array([3]), 4))
    assert set(got["results"][0]) == {"type", "name", "score"} and got["results"][0]["type"] == "item"

    queries = tmp_path / "q.tsv"
    queries.write_text(f"# lhs\trel\trhs\nuser:{u3}\tr_diagonal\t?\n?\tii\titem:{_name('item', 2)}\n", encoding="utf-8")
    out = tmp_path / "top.parquet"
    rc, stdout, err = _main(
        capsys, "predict", str(cfg_path), "--queries", str(queries), "-k", "4", "--out", str(out), "--json"
    )
    assert rc == 0, err
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert lines[0] == got
    _check(lines[1:], _brute_predict(cfg, dense, model, 6, "rhs", np.array([2]), 4))
    table = pq.read_table(out).to_pylist()
    assert [r["rank"] for r in table] == [1, 2, 3, 4] * 2
    assert [r["name"] for r in table[:4]] == [r["name"] for r in got["results"]]

    rc, stdout, err = _main(
        capsys, "neighbors", str(cfg_path), "--type", "item", "--name", _name("item", 1), "-k", "3", "--json"
    )
    assert rc == 0, err
    assert len(json.loads(stdout)["results"]) == 3

    rc, _, err = _main(capsys, "predict", str(cfg_path), "--lhs", "user:ghost", "--relation", "r_diagonal")
    assert rc == 2 and err.strip() == "tbg predict: error: --lhs: unknown user 'ghost'"
    queries.write_text(f"user:{u3}\tr_nope\t?\n")
    rc, _, err = _main(capsys, "predict", str(cfg_path), "--queries", str(queries))
    assert (
        rc == 2
        and err.strip()
        == f"tbg predict: error: {queries} row 1: unknown relation 'r_nope' (relations: "
        + ", ".join(r.name for r in cfg.model.relations)
        + ")"
    )
    rc, _, err = _main(capsys, "neighbors", str(cfg_path), "--type", "tweet", "--name", "x")
    assert rc == 2 and err.strip() == "tbg neighbors: error: unknown entity type 'tweet' (types: user, item)"

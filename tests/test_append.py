"""Graphs that grow: `tbg import --append`, warm start of the grown graph from a checkpoint of the old one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import child_env, make_config, planted, random_index_edges, twhin_config, write_parquet, write_tsv
from readback import graph_multiset, source_multiset

import tbg
from tbg.checkpoint import open_checkpoint
from tbg.errors import ConsistencyError, InputError
from tbg.graph import Graph

OLD, NEW = 300, 100  # entities before / added by the append
CLUSTERS = 50
EDGES = 12000
RELS = [(f"r{i}", "node", "node") for i in range(2)]


def _rows(ids, rel, rhs) -> list[tuple]:  # noqa: ANN001
    return [(f"n{a}", f"r{r}", f"n{b}") for a, r, b in zip(ids, rel, rhs)]


@pytest.fixture(scope="module")
def planted_tsv(tmp_path_factory) -> Path:  # noqa: ANN001
    """A planted graph of OLD + NEW entities as TSV: old.tsv (edges among the old entities), new.tsv and
    new_test.tsv (edges touching a new entity: the append's train edges and held-out ones)."""
    return write_planted(tmp_path_factory.mktemp("planted"))


def write_planted(root: Path) -> Path:
    lhs, rel, rhs, _ = planted(n=OLD + NEW, clusters=CLUSTERS, num_rel=2, edges=EDGES, seed=3, shift=1)
    old = (lhs < OLD) & (rhs < OLD)
    touching = np.flatnonzero(~old)
    test = touching[:300]
    write_tsv(root / "old.tsv", _rows(lhs[old], rel[old], rhs[old]))
    write_tsv(root / "valid.tsv", _rows(lhs[old][:200], rel[old][:200], rhs[old][:200]))
    write_tsv(root / "new.tsv", _rows(lhs[touching[300:]], rel[touching[300:]], rhs[touching[300:]]))
    write_tsv(root / "new_test.tsv", _rows(lhs[test], rel[test], rhs[test]))
    return root


def _config(root: Path, save: str, frozen: bool = False, **over):  # noqa: ANN003, ANN202
    """``frozen``: every learning rate 0 (a schedule), so a run's checkpoint holds the state it started from."""
    optimizer: dict = {"adagrad": {"lr": 0.1}}
    if frozen:
        optimizer["learning_rate"] = {"piecewise_constant": {"learning_rate_boundaries": [1000],
                                                             "learning_rate_values": [0.0, 0.1]}}  # fmt: skip
    overrides = {
        "graph.id_mode": "names", "graph.format": "tsv", "graph.relation_by": "name",
        "training.num_epochs": 10, "model.loss": "softmax", **over,
    }  # fmt: skip
    return make_config(
        root / "graph", save_dir=root / save, types={"node": (None, 16, 2)}, relations=RELS,
        optimizer=optimizer, train=str(root / "old.tsv"), valid=str(root / "valid.tsv"),
        overrides={**overrides, "model.translation_optimizer": optimizer},
    )  # fmt: skip


def _placement(graph: Graph) -> dict[str, tuple[int, int]]:
    names = graph.names("node")
    part, off = graph.locate("node", np.arange(len(names)))
    return dict(zip(names.tolist(), zip(part.tolist(), off.tolist())))


def test_append_warm_start(planted_tsv: Path, tmp_path: Path) -> None:
    """Train, append edges with new entities, warm-start: old vectors unchanged at start, new ones learned."""
    root = tmp_path
    for name in ("old.tsv", "valid.tsv", "new.tsv", "new_test.tsv"):
        (root / name).write_bytes((planted_tsv / name).read_bytes())
    cfg = _config(root, "a")
    tbg.import_graph(cfg)
    tbg.train(cfg)
    before = _placement(Graph(cfg.graph_dir))
    with tbg.load(str(root / "a")) as old:  # (a reader: an append waits for it to close)
        old_vectors = dict(zip(old.entity_names("node").tolist(), old.vectors("node")))

    summary = tbg.import_graph(cfg, append={"train": str(root / "new.tsv"), "test": str(root / "new_test.tsv")})
    assert summary.new_entities == {"node": NEW}
    graph = Graph(cfg.graph_dir)
    assert [e["kind"] for e in graph.lineage] == ["import", "append"]
    assert graph.lineage[1]["splits"]["train"]["sources"][0]["path"] == str(root / "new.tsv")
    after = _placement(graph)
    assert all(after[name] == where for name, where in before.items())  # known entities keep (partition, offset)
    sizes = [graph.entity_types["node"].partition_size(p) for p in range(2)]
    assert sum(sizes) == OLD + NEW and abs(sizes[0] - sizes[1]) <= 1  # new rows balanced

    with pytest.raises(ConsistencyError, match="cannot be resumed"):  # the old run's checkpoint: no resume
        tbg.train(cfg)
    with pytest.raises(ConsistencyError, match="warm"):
        tbg.evaluate(cfg, "test", checkpoint=str(root / "a"))

    start = _config(root, "b", frozen=True, **{"training.initial_checkpoint_dir": str(root / "a"),
                                           "training.num_train_steps": 1})  # fmt: skip
    tbg.train(start)  # one step at lr 0: its checkpoint is the warm start itself
    with tbg.load(str(root / "b")) as warm:
        vectors = dict(zip(warm.entity_names("node").tolist(), warm.vectors("node")))
    assert len(vectors) == OLD + NEW
    assert all(np.array_equal(vectors[name], v) for name, v in old_vectors.items())
    assert all(np.abs(vectors[f"n{i}"]).sum() > 0 for i in range(OLD, OLD + NEW) if f"n{i}" in vectors)

    grown = _config(root, "c", **{"training.initial_checkpoint_dir": str(root / "a"),
                                  "training.train_on": "appended", "training.warm_start_optimizer": True})  # fmt: skip
    tbg.train(grown)
    mrr = tbg.evaluate(grown, "test")["metrics"]["overall"]["mean"]["mrr"]
    assert mrr > 0.1  # random ranking among 400 entities: about 0.016
    a_state = open_checkpoint(str(root / "a")).optimizer_state("node", 0)["sum"]
    c_state = open_checkpoint(str(root / "c")).optimizer_state("node", 0)["sum"]
    assert a_state.sum() > 0 and (c_state[: len(a_state)] >= a_state - 1e-6).all()  # optimizer state copied
    tbg.train(grown)  # the warm-started run resumes from its own checkpoints (finished: nothing to do)


def test_append_indices_mode(tmp_path: Path) -> None:
    """Indices mode: num_embeddings grows, ids keep their rows; the buckets hold old and new edges."""
    sizes = {"user": 50, "tweet": 30}
    rels = [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("follow", "user", "user")]
    first = random_index_edges(400, 1, sizes, rels)
    grown = {"user": 80, "tweet": 30}
    more = random_index_edges(300, 2, grown, rels)
    cols = ("lhs", "rel", "rhs")
    write_parquet(tmp_path / "a.parquet", {k: first[k] for k in cols})
    write_parquet(tmp_path / "b" / "part-0.parquet", {k: more[k] for k in cols})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "a.parquet"), valid=str(tmp_path / "a.parquet"),
                       partitions=3)  # fmt: skip
    tbg.import_graph(cfg)
    g0 = Graph(cfg.graph_dir)
    placed = {t: g0.locate(t, np.arange(n)) for t, n in sizes.items()}
    bigger = tbg.load_config(cfg, ["model.embeddings.tables[0].num_embeddings=80"])
    tbg.import_graph(bigger, append=str(tmp_path / "b"))
    g = Graph(cfg.graph_dir)
    assert g.entity_types["user"].count == 80 and g.entity_types["tweet"].count == 30
    for t, n in sizes.items():
        part, off = g.locate(t, np.arange(n))
        assert np.array_equal(part, placed[t][0]) and np.array_equal(off, placed[t][1])
    assert sorted(np.diff(g.entity_types["user"].bounds).tolist()) == [26, 27, 27]
    want = source_multiset(first["lhs"], first["rel"], first["rhs"]) + source_multiset(
        more["lhs"], more["rel"], more["rhs"]
    )
    assert graph_multiset(g, "train") == want
    assert graph_multiset(g, "valid") == source_multiset(first["lhs"], first["rel"], first["rhs"])
    # buckets of two segments, read in stratified chunks smaller than a bucket: every edge once per epoch
    run = tbg.load_config(bigger, [f"training.save_dir={tmp_path / 'run'}", "training.max_edges_per_chunk=16",
                                   "training.num_epochs=2", "model.loss=logistic"])  # fmt: skip
    assert tbg.train(run)["edges"] == 2 * 700


def _yaml(cfg) -> str:  # noqa: ANN001
    from tbg.config import dump_config

    return dump_config(cfg)


def _cli(cfg_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tbg", "import", str(cfg_path), "--no-progress", *args],
        capture_output=True, text=True, env=child_env(),
    )  # fmt: skip


def test_append_errors(tmp_path: Path) -> None:
    """Bad appends are one line, exit 2, and leave the graph as it was (no temp dirs)."""
    rows = [(f"u{i}", "fav", f"t{i % 7}") for i in range(40)]
    write_tsv(tmp_path / "e.tsv", rows)
    write_tsv(tmp_path / "bad.tsv", [*rows[:5], ("u1", "nope", "t1")])
    write_tsv(tmp_path / "good.tsv", [("u99", "fav", "t1")])
    names = {"graph.id_mode": "names", "graph.format": "tsv", "graph.relation_by": "name"}
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.tsv"), valid=str(tmp_path / "e.tsv"),
                       types={"user": (None, 4, 2), "tweet": (None, 4, 1)}, overrides=names)  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(_yaml(cfg))
    missing = _cli(path, "--append", str(tmp_path / "good.tsv"))
    assert missing.returncode == 2 and "no imported graph here" in missing.stderr
    tbg.import_graph(cfg)
    manifest = (tmp_path / "g" / "manifest.json").read_text()
    bad = _cli(path, "--append", str(tmp_path / "bad.tsv"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "bad.tsv row 6" in bad.stderr
    parts = _cli(path, "--append", str(tmp_path / "good.tsv"), "--set", "model.embeddings.tables[0].num_partitions=3")
    assert parts.returncode == 2 and "num_partitions" in parts.stderr and "Traceback" not in parts.stderr
    both = _cli(path, "--append", str(tmp_path / "good.tsv"), "--overwrite")
    assert both.returncode == 2 and "--append" in both.stderr
    assert (tmp_path / "g" / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name == "g" or p.name.startswith("g.")) == ["g"]
    with pytest.raises(ConsistencyError, match="train_on: appended"):
        tbg.train(tbg.load_config(cfg, ["training.train_on=appended", "training.num_train_steps=1"]))
    # a run killed between its two renames left the graph moved aside (and its temp dir): moved back first
    (tmp_path / "g").rename(tmp_path / "g.old-1-dead")
    (tmp_path / "g.tmp-1-dead").mkdir()
    ok = _cli(path, "--append", str(tmp_path / "good.tsv"), "--append", f"valid={tmp_path / 'good.tsv'}")
    assert ok.returncode == 0, ok.stderr
    g = Graph(str(tmp_path / "g"))
    assert g.entity_types["user"].count == 41 and g.num_edges("valid") == 41 and len(g.lineage) == 2
    weighted = tbg.load_config(cfg, ["graph.columns={lhs: 0, rel: 1, rhs: 2, weight: 3}"])
    with pytest.raises(InputError, match="weights"):
        tbg.import_graph(weighted, append=str(tmp_path / "good.tsv"))

"""Evaluation against a slow, obviously-correct reference ranking on small random graphs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from builders import integer_model, make_config, write_checkpoint, write_graph

from tbg.evaluation.checkpoint_eval import evaluate_checkpoint
from tbg.evaluation.evaluate import evaluate_model
from tbg.evaluation.ranking import SideCounts, summarize
from tbg.graph import Graph

TYPES = {"user": (37, 6, 1), "item": (23, 6, 1)}
RELS = [
    ("likes", "user", "item", "translation"),
    ("follows", "user", "user", "diagonal"),
    ("bought", "user", "item", "none"),
]


def config(run: Path, types: dict, comparator: str = "dot", sides: str = "both", **eval_kw: Any):
    """The run dir ``run`` (graph in ``run/graph``) with ``comparator``, ``relation_sides`` and ``eval`` keys."""
    over = {
        "model.comparator": comparator,
        "model.relation_sides": sides,
        **{f"eval.{k}": v for k, v in eval_kw.items()},
        "runtime.num_threads": None,  # eval runs on the process's torch threads
    }
    return make_config(run / "graph", save_dir=run, types=types, relations=RELS, overrides=over)


def random_edges(rng: np.random.Generator, n: int, types: dict, rels: list) -> tuple[np.ndarray, ...]:
    rel = rng.integers(0, len(rels), n)
    lhs = np.array([rng.integers(0, types[rels[r][1]][0]) for r in rel])
    rhs = np.array([rng.integers(0, types[rels[r][2]][0]) for r in rel])
    return lhs, rel, rhs


def build(tmp_path, partitions: int = 1, comparator: str = "dot", sides: str = "both", seed: int = 0, **eval_kw):
    """A graph with train/valid/test (test repeats some train edges' queries) and an integer-valued checkpoint."""
    types = {k: (c, d, partitions) for k, (c, d, _) in TYPES.items()}
    cfg = config(tmp_path / f"run_p{partitions}", types, comparator, sides, **eval_kw)
    rng = np.random.default_rng(seed)
    train = random_edges(rng, 300, types, RELS)
    valid = random_edges(rng, 40, types, RELS)
    # test: half fresh edges, half sharing a query with train edges (so filtering matters), one exact duplicate
    fresh = random_edges(rng, 30, types, RELS)
    test = tuple(np.concatenate([f, t[:30], f[:1]]) for f, t in zip(fresh, train))
    test = (test[0], test[1], np.concatenate([fresh[2], rng.permutation(train[2][:30]), fresh[2][:1]]))
    test = fix_types(test, types)
    splits = {"train": train, "valid": valid, "test": test}
    perms = write_graph(cfg, splits, seed=seed, names=True)
    erng = np.random.default_rng(seed + 1)
    dense = {k: erng.integers(-2, 3, size=(c, d)).astype(np.float32) for k, (c, d, _) in types.items()}
    model = integer_model(cfg, seed)
    write_checkpoint(cfg, perms, dense, model)
    return cfg, splits, dense, model


def fix_types(edges, types):
    """Keep the permuted rhs ids valid for their relation's rhs type."""
    lhs, rel, rhs = edges
    rhs = rhs.copy()
    for r, (_, _, rt, _) in enumerate(RELS):
        m = rel == r
        rhs[m] = rhs[m] % types[rt][0]
    return lhs, rel, rhs


def reference(cfg, splits, dense, model, split="test", filtered=True, seen_only=False):
    """Per-edge Python loops: score every candidate, drop known true ones (and, with ``seen_only``, entities
    in no edge of any split), count greater/equal."""
    known = {(int(a), int(r), int(b)) for s in splits.values() for a, r, b in zip(*s)}
    seen = {(RELS[r][1], int(a)) for s in splits.values() for a, r in zip(s[0], s[1])}
    seen |= {(RELS[r][2], int(b)) for s in splits.values() for r, b in zip(s[1], s[2])}
    lhs, rel, rhs = splits[split]
    out = {}
    with torch.no_grad():
        for target in ("lhs", "rhs"):
            g, e, n = [], [], []
            for x, y, r in zip(lhs.tolist(), rhs.tolist(), rel.tolist()):
                name, lt, rt, _ = RELS[r]
                ct = rt if target == "rhs" else lt
                kvec = torch.from_numpy(dense[lt][x] if target == "rhs" else dense[rt][y])[None]
                q = model.query(target, kvec, torch.tensor([r]))
                cands = model.candidates(target, torch.from_numpy(dense[ct]), r)
                scores = model.comparator.matrix(q, cands)[0].tolist()
                truth = y if target == "rhs" else x
                s = scores[truth]
                gt = eq = cnt = 0
                for c, sc in enumerate(scores):
                    if c == truth:
                        continue
                    triple = (x, r, c) if target == "rhs" else (c, r, y)
                    if filtered and triple in known:
                        continue
                    if seen_only and (ct, c) not in seen:
                        continue
                    cnt += 1
                    gt += sc > s
                    eq += sc == s
                g.append(gt)
                e.append(eq)
                n.append(cnt)
            out[target] = SideCounts(np.array(g), np.array(e), np.array(n))
    names = [r[0] for r in RELS]
    return summarize(out["lhs"], out["rhs"], rel, names, cfg.eval.hits_at)


def assert_metrics_equal(got, want):
    assert got.keys() == want.keys()
    for k in want:
        if isinstance(want[k], dict):
            assert_metrics_equal(got[k], want[k])
        elif isinstance(want[k], float) and np.isnan(want[k]):
            assert np.isnan(got[k])
        else:
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), k


@pytest.mark.parametrize("sides", ["both", "rhs"])
@pytest.mark.parametrize("filtered", [True, False])
@pytest.mark.parametrize("comparator", ["dot", "squared_l2"])
def test_matches_reference(tmp_path, sides, filtered, comparator):
    cfg, splits, dense, model = build(tmp_path, comparator=comparator, sides=sides)
    got = evaluate_checkpoint(cfg, "test", filtered=filtered)
    want = reference(cfg, splits, dense, model, filtered=filtered)
    assert_metrics_equal(got["metrics"], want)
    # integer embeddings produce real ties: optimistic and pessimistic must differ somewhere
    o = got["metrics"]["overall"]["mean"]
    assert o["optimistic"]["mrr"] > o["mrr"] > o["pessimistic"]["mrr"]
    assert got["protocol"]["filtered"] is filtered
    assert got["counts"]["edges"] == 61


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("filtered", [True, False])
def test_seen_candidates_skip_ids_in_no_edge(tmp_path, partitions, filtered):
    """Indices mode, tables declaring ids no edge mentions: ``all`` ranks them, ``seen`` does not."""
    types = {k: (c, d, partitions) for k, (c, d, _) in TYPES.items()}  # 37 users, 23 items declared
    used = {"user": (30,), "item": (17,)}  # edges use only the first 30 users and 17 items
    cfg = config(tmp_path / f"seen_p{partitions}", types, "dot", "rhs", batch_size=6)
    rng = np.random.default_rng(4)
    splits = {s: random_edges(rng, n, used, RELS) for s, n in (("train", 150), ("test", 40))}
    perms = write_graph(cfg, splits, names=False)
    dense = {k: rng.integers(-2, 3, size=(c, d)).astype(np.float32) for k, (c, d, _) in types.items()}
    model = integer_model(cfg, 2)
    write_checkpoint(cfg, perms, dense, model)
    seen = evaluate_checkpoint(cfg, "test", candidates="seen", filtered=filtered)
    every = evaluate_checkpoint(cfg, "test", candidates="all", filtered=filtered)
    assert_metrics_equal(seen["metrics"], reference(cfg, splits, dense, model, filtered=filtered, seen_only=True))
    assert_metrics_equal(every["metrics"], reference(cfg, splits, dense, model, filtered=filtered))
    occurring: dict[str, set[int]] = {"user": set(), "item": set()}
    for lhs, rel, rhs in splits.values():
        for x, y, r in zip(lhs.tolist(), rhs.tolist(), rel.tolist()):
            occurring[RELS[r][1]].add(x)
            occurring[RELS[r][2]].add(y)
    assert seen["counts"]["candidates"] == {t: len(ids) for t, ids in occurring.items()}
    assert every["counts"]["candidates"] == {"user": 37, "item": 23}
    assert seen["protocol"]["candidates"] == "seen" and "any imported split" in seen["protocol"]["candidate_set"]
    assert every["protocol"]["candidates"] == "all" and "every declared" in every["protocol"]["candidate_set"]
    assert seen["metrics"]["overall"]["mean"]["mrr"] > every["metrics"]["overall"]["mean"]["mrr"]


def test_filtering_raises_ranks(tmp_path):
    cfg, splits, dense, model = build(tmp_path)
    raw = evaluate_checkpoint(cfg, "test", filtered=False)["metrics"]["overall"]["mean"]
    filt = evaluate_checkpoint(cfg, "test", filtered=True)["metrics"]["overall"]["mean"]
    assert filt["mrr"] > raw["mrr"]
    assert filt["mean_candidates"] < raw["mean_candidates"]
    # raw: every entity of the candidate type but the truth (users 37, items 23)
    lhs_n = raw["count"] // 2
    assert raw["mean_candidates"] == pytest.approx(
        (lhs_n * 36 + sum(36 if RELS[r][2] == "user" else 22 for r in splits["test"][1])) / raw["count"]
    )


@pytest.mark.parametrize("sides", ["both", "rhs"])
def test_partitions_do_not_change_results(tmp_path, sides):
    """P=1 and P=3 with the same dense embeddings give identical metrics (only the layout differs)."""
    results = []
    for parts in (1, 3):
        cfg, splits, dense, model = build(tmp_path, partitions=parts, sides=sides, batch_size=7)
        res = evaluate_checkpoint(cfg, "test")
        results.append(res["metrics"])
        assert Graph(cfg.graph_dir).entity_types["user"].num_partitions == parts
    assert_metrics_equal(results[1], results[0])
    assert_metrics_equal(results[0], reference(cfg, splits, dense, model))


def test_float_embeddings_partitioned_cos(tmp_path):
    """Real-valued embeddings, cos comparator, P=3, small blocks: same ranks as the reference."""
    types = {k: (c, d, 3) for k, (c, d, _) in TYPES.items()}
    cfg = config(tmp_path / "cos", types, "cos", "rhs", batch_size=5)
    rng = np.random.default_rng(3)
    splits = {s: fix_types(random_edges(rng, n, types, RELS), types) for s, n in (("train", 200), ("test", 50))}
    perms = write_graph(cfg, splits, names=True)
    dense = {k: rng.standard_normal((c, d)).astype(np.float32) for k, (c, d, _) in types.items()}
    model = integer_model(cfg, 5)
    write_checkpoint(cfg, perms, dense, model)
    got = evaluate_checkpoint(cfg, "test")
    assert_metrics_equal(got["metrics"], reference(cfg, splits, dense, model))


def test_per_relation_and_sides_consistent(tmp_path):
    cfg, splits, dense, model = build(tmp_path)
    m = evaluate_checkpoint(cfg, "test")["metrics"]
    per = m["per_relation"]
    counts = {name: int((splits["test"][1] == r).sum()) for r, (name, *_rest) in enumerate(RELS)}
    assert {k: v["lhs"]["count"] for k, v in per.items()} == {k: c for k, c in counts.items() if c}
    total = sum(v["rhs"]["mrr"] * v["rhs"]["count"] for v in per.values()) / m["overall"]["rhs"]["count"]
    assert total == pytest.approx(m["overall"]["rhs"]["mrr"])
    o = m["overall"]
    assert o["mean"]["mrr"] == pytest.approx((o["lhs"]["mrr"] + o["rhs"]["mrr"]) / 2)
    assert 0 <= o["mean"]["auc"] <= 1 and o["mean"]["hits@1"] <= o["mean"]["hits@3"] <= o["mean"]["hits@10"]


def test_in_memory_api_and_max_edges(tmp_path):
    """evaluate_model from in-memory tables (the trainer's path) equals the checkpoint path."""
    cfg, splits, dense, model = build(tmp_path, partitions=3)
    graph = Graph(cfg.graph_dir)
    tables = {t: {p: dense[t][graph.partition_ids(t, p)] for p in range(3)} for t in dense}
    res = evaluate_model(cfg, graph, lambda t, p: tables[t][p], model, "test", device="cpu")
    assert_metrics_equal(res["metrics"], evaluate_checkpoint(cfg, "test")["metrics"])
    small = evaluate_model(
        cfg, graph, lambda t, p: tables[t][p], model, "valid", max_edges=10, filter_splits=["train", "valid"]
    )
    assert small["counts"]["edges"] == 10 and small["protocol"]["filter_splits"] == ["train", "valid"]


def test_sampled_mode(tmp_path):
    cfg, splits, dense, model = build(tmp_path, candidates="sampled", num_batch_negatives=8, num_uniform_negatives=5)
    a = evaluate_checkpoint(cfg, "test", filtered=False)
    b = evaluate_checkpoint(cfg, "test", filtered=False)
    assert a["metrics"] == b["metrics"]  # seeded
    assert a["protocol"]["candidates"] == "sampled" and "SAMPLED" in a["protocol"]["sampled"]["label"]
    o = a["metrics"]["overall"]
    # at most 7 in-batch + 5 uniform negatives, so ranks are bounded by 13
    assert 1 <= o["mean"]["pessimistic"]["mean_rank"] <= 13
    assert o["mean"]["mean_candidates"] <= 12
    full = evaluate_checkpoint(cfg, "test", candidates="all", filtered=False)["metrics"]["overall"]["mean"]
    assert o["mean"]["mrr"] > full["mrr"]  # fewer candidates -> higher MRR
    filt = evaluate_checkpoint(cfg, "test", filtered=True)["metrics"]["overall"]["mean"]
    assert filt["mean_candidates"] <= o["mean"]["mean_candidates"]


def test_sampled_uniform_only_is_exact_against_reference(tmp_path):
    """With 0 batch negatives and uniform negatives = all entities the sampled ranks approach the full ones."""
    cfg, splits, dense, model = build(tmp_path, candidates="sampled", num_batch_negatives=0, num_uniform_negatives=4000)
    res = evaluate_checkpoint(cfg, "test", filtered=False)["metrics"]["overall"]["mean"]
    full = reference(cfg, splits, dense, model, filtered=False)["overall"]["mean"]
    assert res["auc"] == pytest.approx(full["auc"], abs=0.02)


def test_cli_writes_json_and_table(tmp_path, capsys):
    from tbg.cli import main

    cfg, splits, dense, model = build(tmp_path)
    from tbg.config import dump_config

    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    assert main(["eval", str(path), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "likes" in out and "MRR" in out
    data = json.loads(open(os.path.join(cfg.training.save_dir, "eval_test.json")).read())
    assert data["checkpoint"]["version"] == 1 and data["protocol"]["filtered"] is True
    assert data["metrics"]["overall"]["mean"]["optimistic"]["mrr"] >= data["metrics"]["overall"]["mean"]["mrr"]
    assert main(["eval", str(path), "--no-filter", "--json-out", str(tmp_path / "x.json")]) == 0
    assert json.loads((tmp_path / "x.json").read_text())["protocol"]["filtered"] is False
    capsys.readouterr()
    assert main(["eval", str(path), "--candidates", "seen", "--json-out", str(tmp_path / "s.json")]) == 0
    assert "candidates: entities seen in any split" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["protocol"]["candidates"] == "seen"


def test_validation_metrics_for_training(tmp_path):
    """The trainer's hook: flat keys, sampled by default, train+valid filter, caller's module untouched."""
    from tbg.evaluation.evaluate import validation_metrics

    cfg, splits, dense, model = build(tmp_path, num_batch_negatives=8, num_uniform_negatives=5)
    graph = Graph(cfg.graph_dir)
    tables = {t: {0: torch.from_numpy(dense[t][graph.partition_ids(t, 0)])} for t in dense}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = validation_metrics(cfg, graph, lambda t, p: tables[t][p], model, max_edges=20)
    assert out["valid_count"] == 40 and 0 < out["valid_mrr"] <= 1 and "valid_hits@10" in out
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    full = validation_metrics(cfg, graph, lambda t, p: tables[t][p], model, candidates="all", max_edges=40)
    assert full["valid_mean_candidates"] > out["valid_mean_candidates"]


@pytest.mark.parametrize("candidates", ["all", "sampled"])
def test_worker_threads_do_not_change_results(tmp_path, candidates):
    """Chunks run in torch.get_num_threads() workers; 1 vs 3 workers give identical metrics."""
    cfg, splits, dense, model = build(
        tmp_path, partitions=3, candidates=candidates, batch_size=4, num_batch_negatives=4, num_uniform_negatives=3
    )
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = evaluate_checkpoint(cfg, "test")["metrics"]
        torch.set_num_threads(3)
        three = evaluate_checkpoint(cfg, "test")["metrics"]
        assert torch.get_num_threads() == 3  # restored after the pool
    finally:
        torch.set_num_threads(before)
    assert_metrics_equal(three, one)


def test_a_killed_writers_temp_result_is_removed_by_the_next_eval(tmp_path):
    """``kill -9`` while eval_test.json is being written leaves its temp file; the next ``tbg eval`` of that split
    removes it (a temp of a writer that still runs is left alone)."""
    import subprocess
    import sys
    import time

    from builders import child_env

    from tbg.cli import main
    from tbg.config import dump_config

    cfg, splits, dense, model = build(tmp_path)
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    result = os.path.join(cfg.training.save_dir, "eval_test.json")
    killed = (
        "import os, signal, sys\n"
        "from tbg.durable_files import atomic_write_text\n"
        "os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)  # dies between write and rename\n"
        "atomic_write_text(sys.argv[1], '{}')\n"
    )
    stuck = killed.replace("os.kill(os.getpid(), signal.SIGKILL)", "__import__('time').sleep(60)")

    def temps() -> list[str]:
        return [n for n in os.listdir(cfg.training.save_dir) if n.startswith("eval_test.json.tmp-")]

    live = subprocess.Popen([sys.executable, "-c", stuck, result], env=child_env())  # a writer that still runs
    try:
        while not temps():
            assert live.poll() is None
            time.sleep(0.01)
        assert subprocess.run([sys.executable, "-c", killed, result], env=child_env()).returncode == -9
        assert len(temps()) == 2
        assert main(["eval", str(path), "--split", "test"]) == 0
        assert len(temps()) == 1 and temps()[0].split("-")[1].endswith(f".{live.pid}")  # the live writer's
    finally:
        live.kill()
        live.wait()
    assert json.loads(open(result).read())["checkpoint"]["version"] == 1

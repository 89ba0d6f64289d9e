"""End-to-end training on small planted graphs: TwHIN bug regressions, schedules, P=1 vs P=4, weights."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from builders import make_config, planted_graph
from readback import rank_quality

from tbg.train.batch_scorer import Batch
from tbg.train.edge_stream import read_all
from tbg.train.trainer import Trainer
from tbg.train.workers import Worker


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("graphs")
    out = {}
    for parts in (1, 4):
        splits, _ = planted_graph(make_config(str(root / f"g{parts}"), partitions=parts))
        out[parts] = (str(root / f"g{parts}"), splits)
    return out


def _train(cfg) -> dict:
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    return trainer.run()


def test_logistic_negatives_labelled_zero_and_relations_move(graphs, tmp_path) -> None:
    """TwHIN bugs: negatives labelled 1 (scores of negatives rise) and frozen relation vectors."""
    gdir, _ = graphs[1]
    cfg = make_config(
        gdir, save_dir=str(tmp_path / "run"), overrides={"model.loss": "logistic", "training.num_epochs": 1}
    )
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    trainer.bucket = (0, 0)
    trainer.store.need(trainer.bucket_keys((0, 0)))
    edges = read_all(trainer.graph, "train", (0, 0), trainer.device)
    batch = Batch(edges.lhs[:100], edges.rhs[:100], edges.rel[:100])
    table = trainer.store.get(("node", 0)).table
    negs = torch.arange(0, 400, 7)  # fixed probe entities

    def neg_score() -> float:
        with torch.no_grad():
            _, neg = trainer.model.score_batch("rhs", table[batch.lhs], table[batch.rhs], batch.rel, table[negs])
        return float(neg.float().mean())

    def pos_score() -> float:
        with torch.no_grad():
            return float(trainer.model.score_positive("rhs", table[batch.lhs], table[batch.rhs], batch.rel).mean())

    rel_before = trainer.model.lhs_operators.translation.detach().clone()
    n0, p0 = neg_score(), pos_score()
    for _ in range(20):
        trainer.train_step(batch)
    assert neg_score() < n0 - 0.05  # labelled 0: pushed down
    assert pos_score() > p0 + 0.05
    moved = (trainer.model.lhs_operators.translation - rel_before).abs().sum(1)
    assert (moved > 1e-3).all()  # every relation present in the batch trained


def test_p1_vs_p4_similar_quality(graphs, tmp_path) -> None:
    got = {}
    for parts in (1, 4):
        gdir, splits = graphs[parts]
        cfg = make_config(
            gdir, save_dir=str(tmp_path / f"p{parts}"), partitions=parts, overrides={"training.num_epochs": 6}
        )
        summary = _train(cfg)
        assert summary["epoch"] == 6
        got[parts] = rank_quality(cfg, splits["test"])
        if parts == 4:  # only partitions of the bucket were resident; the others were swapped to files
            swapped = sorted(os.listdir(tmp_path / "p4" / "partitions"))
            assert swapped == [f"node_{p}.h5" for p in range(4)]
    # 8 planted clusters: a perfect model ranks the 7/8 of entities outside the true cluster below (AUC ~0.94)
    assert got[1]["auc"] > 0.85 and got[4]["auc"] > 0.85, got
    assert abs(got[1]["auc"] - got[4]["auc"]) < 0.05, got


@pytest.mark.parametrize("order", ["affinity", "random"])
def test_orders_train_all_edges(graphs, tmp_path, order) -> None:
    gdir, _ = graphs[4]
    over = {"training.num_epochs": 1, "training.bucket_order": order, "training.eval_log_every_n": 30,
            "training.validation_mrr": True}  # fmt: skip
    cfg = make_config(gdir, save_dir=str(tmp_path / "o"), partitions=4, overrides=over)
    summary = _train(cfg)
    assert summary["edges"] == 6000 and summary["epoch"] == 1
    val = [json.loads(x) for x in open(tmp_path / "o" / "metrics.jsonl") if "val_loss" in x]
    assert len(val) == 2 and all(0 < x["valid_mrr"] <= 1 for x in val)  # non-resident partitions read from files


def test_num_train_steps_logging_and_validation(graphs, tmp_path) -> None:
    gdir, _ = graphs[1]
    cfg = make_config(
        gdir,
        save_dir=str(tmp_path / "s"),
        overrides={
            "training.num_train_steps": 25,
            "training.train_log_every_n": 5,
            "training.eval_log_every_n": 10,
            "training.checkpoint_every_n": 10,
            "training.checkpoint_max_to_keep": 2,
            "training.validation_mrr": True,
        },
    )
    summary = _train(cfg)
    assert summary["step"] == 25 and summary["edges"] == 2500
    lines = [json.loads(x) for x in open(tmp_path / "s" / "metrics.jsonl")]
    train = [x for x in lines if "loss" in x]
    val = [x for x in lines if "val_loss" in x]
    assert [x["step"] for x in train] == [5, 10, 15, 20, 25]
    assert [x["step"] for x in val] == [10, 20] and all(x["val_loss"] > 0 for x in val)
    assert all(0 < x["valid_mrr"] <= 1 for x in val) and val[0]["valid_count"] > 0
    assert train[-1]["loss"] < train[0]["loss"] and all(x["edges_per_s"] > 0 for x in train)
    ckpts = sorted(os.listdir(tmp_path / "s" / "checkpoints"))
    assert ckpts == ["latest", "v0000000002", "v0000000003"]  # steps 10, 20, 25; max_to_keep 2
    progress = json.load(open(tmp_path / "s" / "checkpoints" / "v0000000003" / "progress.json"))
    assert progress["step"] == 25 and progress["finished"] and progress["position"] == 2500


def test_lr_schedule_is_used(graphs, tmp_path) -> None:
    gdir, _ = graphs[1]
    sched = {"adagrad": {"lr": 0.1}, "learning_rate": {"piecewise_constant": {
        "learning_rate_boundaries": [3], "learning_rate_values": [0.0, 0.1]}}}  # fmt: skip
    cfg = make_config(gdir, save_dir=tmp_path / "lr", optimizer=sched, overrides={"training.num_train_steps": 3})
    init = None
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    trainer.store.need(trainer.bucket_keys((0, 0)))
    init = trainer.store.get(("node", 0)).table.clone()
    trainer.run()  # 3 steps at lr 0 (schedule), so embeddings are unchanged
    with h5py.File(tmp_path / "lr" / "checkpoints" / "v0000000001" / "embeddings" / "node_0.h5") as f:
        assert np.array_equal(f["embeddings"][...], init.numpy())
    cfg.training.num_train_steps = 4  # the 4th step runs at lr 0.1
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    trainer.run()
    with h5py.File(tmp_path / "lr" / "checkpoints" / "v0000000002" / "embeddings" / "node_0.h5") as f:
        assert not np.array_equal(f["embeddings"][...], init.numpy())


def test_chunked_buckets_and_warm_start(graphs, tmp_path) -> None:
    gdir, splits = graphs[4]
    over = {"training.num_epochs": 2, "training.max_edges_per_chunk": 170}  # chunks not multiples of the batch
    first = make_config(gdir, save_dir=str(tmp_path / "a"), partitions=4, overrides=over)
    summary = _train(first)
    assert summary["edges"] == 2 * 6000 and summary["epoch"] == 2
    warm = make_config(
        gdir,
        save_dir=str(tmp_path / "b"),
        partitions=4,
        overrides={"training.initial_checkpoint_dir": str(tmp_path / "a")},
    )
    trainer = Trainer(warm, progress=False)
    assert "warm start" in trainer.start() and trainer.progress.step == 0
    trainer.store.need([("node", 2)])
    with h5py.File(tmp_path / "a" / "checkpoints" / "v0000000001" / "embeddings" / "node_2.h5") as f:
        assert np.array_equal(trainer.store.get(("node", 2)).table.numpy(), f["embeddings"][...])
        assert float(trainer.store.get(("node", 2)).optimizer.state["sum"].abs().sum()) == 0.0  # weights only


@pytest.mark.parametrize("parts", [1, 2])
def test_two_entity_types_two_groups(tmp_path, parts: int) -> None:
    """Relations user->item and item->user: edges grouped by (lhs type, rhs type), both tables train."""
    from builders import write_graph

    rng = np.random.default_rng(0)
    n = 3000
    rel = rng.integers(0, 2, n)
    users, items = rng.integers(0, 100, n), rng.integers(0, 80, n)
    lhs, rhs = np.where(rel == 0, users, items), np.where(rel == 0, items, users)
    relations = [("bought", "user", "item"), ("sold_to", "item", "user")]
    types = {"user": (100, 8, parts), "item": (80, 8, parts)}
    over = {"training.num_epochs": 3, "model.loss": "logistic"}
    cfg = make_config(
        tmp_path / "g", save_dir=tmp_path / "run", types=types, relations=relations,
        optimizer={"row_adagrad": {"lr": 0.1}}, overrides=over,
    )  # fmt: skip
    write_graph(cfg, {"train": (lhs, rel, rhs)})
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    summary = trainer.run()
    assert summary["edges"] == 3 * n
    lines = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl") if '"loss"' in x]
    assert lines[-1]["loss"] < lines[0]["loss"]
    from tbg.checkpoint import open_checkpoint

    ckpt = open_checkpoint(str(tmp_path / "run"))
    for etype, count in (("user", 100), ("item", 80)):
        rows = sum(ckpt.embeddings(etype, p).shape[0] for p in range(parts))
        assert rows == count
        state = ckpt.optimizer_state(etype, 0)["sum"]
        assert state.shape == (ckpt.embeddings(etype, 0).shape[0],) and (state > 0).mean() > 0.9


def test_gradient_accumulation_applies_summed_gradients(graphs, tmp_path) -> None:
    """gradient_accumulation: 2 — nothing moves after the first batch; after the second, SGD applies g1 + g2."""
    gdir, _ = graphs[1]
    cfg = make_config(
        gdir, save_dir=tmp_path / "acc", optimizer={"sgd": {"lr": 0.5}}, overrides={"training.gradient_accumulation": 2}
    )
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    trainer.store.need(trainer.bucket_keys((0, 0)))
    edges = read_all(trainer.graph, "train", (0, 0), trainer.device)
    batches = [Batch(edges.lhs[k : k + 50], edges.rhs[k : k + 50], edges.rel[k : k + 50]) for k in (0, 50)]
    table = trainer.store.get(("node", 0)).table
    start = table.clone()
    rel_start = [p.detach().clone() for p in trainer.model.parameters()]

    # expected: both gradients taken at the starting parameters, summed; the group's negatives come from
    # the generator seeded for its first step
    expected = torch.zeros_like(start)
    gen = Worker(trainer.scorer, []).reseed(cfg.runtime.seed, 1)
    for b in batches:
        res = trainer.scorer.score(b, lambda _t, _s: (("node", 0), start), cfg.train_data, gen)
        for g in res.gathered:
            expected.index_add_(0, g.ids, g.gradient().float())
    trainer.model.zero_grad(set_to_none=True)

    trainer.train_step(batches[0])
    assert torch.equal(table, start)
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), rel_start))
    trainer.train_step(batches[1])
    assert torch.allclose(table, start - 0.5 * expected, atol=1e-5)
    assert not all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), rel_start))

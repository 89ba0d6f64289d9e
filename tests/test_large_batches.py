"""Large batches: the default negatives of a batch above 1000 edges (chunks of 1000) and the learning-rate
rule (``optimizer.lr_scaling``), through the config and tiny training runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from builders import make_config, planted_graph
from readback import full_table

import tbg
from tbg.config import GlobalNegativesScope, InBatchScope, LrScaling
from tbg.model.lr_scaling import REFERENCE_BATCH, auto_rule, effective_batch, lr_factor

BIG = {"train_data.per_replica_batch_size": 2000, "train_data.in_batch_negatives": 5,
       "train_data.global_negatives": 20, "runtime.hogwild_workers": 1, "training.num_epochs": 1}  # fmt: skip


def _lrs(save_dir: str) -> list[float]:
    lines = (Path(save_dir) / "metrics.jsonl").read_text().splitlines()
    return [rec["lr"] for rec in map(json.loads, lines) if "lr" in rec]


def test_auto_cuts_a_large_batch_into_chunks_of_the_reference_batch(tmp_path) -> None:
    cfg = make_config(tmp_path / "g", overrides=BIG)
    assert cfg.train_data.negative_scheme() == (InBatchScope.chunk, REFERENCE_BATCH)
    assert cfg.train_data.uniform_scheme() == (GlobalNegativesScope.chunk, 1)  # each chunk its own draw
    # candidates through the relation (chunk scope cannot score them): S = 1000 of the batch
    assert cfg.train_data.negative_scheme(relation_free=False) == (InBatchScope.batch, REFERENCE_BATCH)
    small = make_config(tmp_path / "g", overrides=BIG | {"train_data.per_replica_batch_size": 1000})
    assert small.train_data.negative_scheme() == (InBatchScope.batch, 1000)  # the whole batch, as before


def test_auto_large_batch_trains_exactly_like_explicit_chunks(tmp_path) -> None:
    graph = tmp_path / "g"
    auto = make_config(graph, save_dir=tmp_path / "auto", overrides=BIG)
    chunk_over = {"train_data.in_batch_scope": "chunk", "train_data.in_batch_negatives": 1000,
                  "train_data.global_negatives_scope": "chunk"}  # fmt: skip
    chunk = make_config(graph, save_dir=tmp_path / "chunk", overrides=BIG | chunk_over)
    planted_graph(auto, edges=5000)
    for cfg in (auto, chunk):
        tbg.train(cfg, fresh=True)
    assert torch.equal(*(full_table(c.training.save_dir, str(graph))[0] for c in (auto, chunk)))


@pytest.mark.parametrize(
    ("kind", "rule", "batch", "accumulation", "want"),
    [
        ("adagrad", "auto", 10_000, None, 1.0),  # auto = none, the rule measured best
        ("adam", "auto", 100_000, None, 1.0),
        ("sgd", "auto", 10_000, None, 1.0),
        ("row_adagrad", "sqrt", 2000, 5, math.sqrt(10)),  # the effective batch counts
        ("adam", "sqrt", 100_000, None, 10.0),
        ("adagrad", "none", 10_000, None, 1.0),
        ("adagrad", "linear", 10_000, None, 10.0),
        ("adagrad", "sqrt", 500, None, 1.0),  # below the reference batch: the config's lr
    ],
)
def test_lr_factor(tmp_path, kind: str, rule: str, batch: int, accumulation: int | None, want: float) -> None:
    over = {"train_data.per_replica_batch_size": batch, "training.gradient_accumulation": accumulation}
    cfg = make_config(tmp_path / "g", optimizer={kind: {"lr": 0.1}, "lr_scaling": rule}, overrides=over)
    opt = cfg.model.embeddings.tables[0].optimizer
    assert opt.lr_scaling == LrScaling(rule)
    assert lr_factor(opt, effective_batch(cfg)) == pytest.approx(want)
    assert auto_rule(kind) == LrScaling.none


def test_scaled_lr_warms_up_over_the_first_epoch_then_holds(tmp_path) -> None:
    """``lr_scaling: sqrt`` at B = 2000 (3 batches an epoch) is lr x sqrt(2) after a linear warm-up over the
    first epoch, for tables and relations alike: it trains exactly like that schedule written out."""
    graph = tmp_path / "g"
    over = BIG | {"training.num_epochs": 2, "training.train_log_every_n": 1}
    scaled = make_config(graph, save_dir=tmp_path / "scaled", optimizer={"adagrad": {"lr": 0.1}, "lr_scaling": "sqrt"},
                         overrides=over | {"model.translation_optimizer.lr_scaling": "sqrt"})  # fmt: skip
    lr = 0.1 * math.sqrt(2)
    steps = [lr * (1 / 3), lr * (2 / 3), lr]
    fixed = {
        "adagrad": {"lr": lr},
        "lr_scaling": "none",
        "learning_rate": {"piecewise_constant": {"learning_rate_boundaries": [1, 2], "learning_rate_values": steps}},
    }
    plain = make_config(graph, save_dir=tmp_path / "plain", optimizer=fixed,
                        overrides=over | {"model.translation_optimizer": fixed})  # fmt: skip
    planted_graph(scaled, edges=5000)
    for cfg in (scaled, plain):
        tbg.train(cfg, fresh=True)
    assert torch.equal(*(full_table(c.training.save_dir, str(graph))[0] for c in (scaled, plain)))
    assert _lrs(scaled.training.save_dir) == pytest.approx(steps + [lr] * 3)


@pytest.mark.parametrize("batch", [1000, 2000])
def test_auto_keeps_the_config_lr_at_any_batch(tmp_path, batch: int) -> None:
    """The default (`auto` = `none`, the rule measured best): the config's lr at every step, no warm-up."""
    over = BIG | {"train_data.per_replica_batch_size": batch, "training.train_log_every_n": 1}
    cfg = make_config(tmp_path / "g", overrides=over)
    planted_graph(cfg, edges=3000)
    tbg.train(cfg, fresh=True)
    assert _lrs(cfg.training.save_dir) == [0.1] * (-(-3000 // batch))

"""Edge weights end to end: a source's weight column and a relation's ``weight`` scale that edge's loss.

docs/training.md: batch loss = sum over edges of relation.weight x edge weight x (loss_rhs + loss_lhs).  Each
run goes through the CLI (import a TSV with a weight column, train, export), from the same seed, so runs differ
only in their weights: same initial vectors, same shuffles, same negatives.
"""

from __future__ import annotations

import numpy as np
import pytest
from builders import make_config

from tbg.cli import main
from tbg.config import dump_config

PAIRS = 200  # edge i links node i to node PAIRS + i: every node is in exactly one edge
HEAVY = 4.0


def _write_run(tmp, name: str, edge_weights, heavy_relation_weight: float = 1.0) -> str:
    """A TSV source with a weight column and its config; returns the config path."""
    run = tmp / name
    run.mkdir()
    lines = [f"{i}\t{'heavy' if i % 2 == 0 else 'light'}\t{PAIRS + i}\t{w}" for i, w in enumerate(edge_weights)]
    (run / "train.tsv").write_text("\n".join(lines) + "\n")
    (run / "valid.tsv").write_text("\n".join(lines[:4]) + "\n")
    opt = {"sgd": {"lr": 0.05}}
    data = {"per_replica_batch_size": 50, "in_batch_negatives": 20, "global_negatives": 10}
    relations = [{"name": "heavy", "lhs": "node", "rhs": "node", "operator": "none", "weight": heavy_relation_weight},
                 {"name": "light", "lhs": "node", "rhs": "node", "operator": "none"}]  # fmt: skip
    over = {
        "runtime.device": "cpu", "training.num_train_steps": 1000, "training.num_epochs": 2,
        "training.checkpoint_every_n": 1000, "training.eval_log_every_n": 1000, "training.train_log_every_n": 4,
        "model.relations": relations, "model.translation_optimizer": opt, "model.loss": "logistic",
        **{f"{section}.{k}": v for section in ("train_data", "validation_data") for k, v in data.items()},
        "graph.columns": {"lhs": 0, "rel": 1, "rhs": 2, "weight": 3},
    }  # fmt: skip
    cfg = make_config(
        run / "graph", save_dir=run / "model", types={"node": (2 * PAIRS, 16, 1)}, optimizer=opt,
        train=str(run / "train.tsv"), valid=str(run / "valid.tsv"), overrides=over,
    )  # fmt: skip
    path = run / "cfg.yaml"
    path.write_text(dump_config(cfg))
    return str(path)


def _run(tmp, name: str, edge_weights: np.ndarray, heavy_relation_weight: float = 1.0) -> np.ndarray:
    """Import + train + export one run; returns the node vectors in dense-id order."""
    path = _write_run(tmp, name, edge_weights, heavy_relation_weight)
    run = tmp / name
    assert main(["import", path, "--no-progress"]) == 0
    assert main(["train", path, "--no-progress"]) == 0
    assert main(["export", path, "--format", "npy", "--out", str(run / "export")]) == 0
    return np.load(run / "export" / "node.npy")


def _scores(vectors: np.ndarray) -> np.ndarray:
    """Score of edge i (operator none, dot comparator): the dot product of its two nodes."""
    return np.einsum("id,id->i", vectors[:PAIRS], vectors[PAIRS:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights")
    even = np.arange(PAIRS) % 2 == 0
    ones = np.ones(PAIRS)
    return {
        "base": _run(tmp, "base", ones),
        "edge": _run(tmp, "edge", np.where(even, HEAVY, 1.0)),  # even edges weigh 4 in the source
        "relation": _run(tmp, "relation", ones, heavy_relation_weight=HEAVY),  # relation heavy weighs 4
        "both": _run(tmp, "both", np.where(even, 2.0, 1.0), heavy_relation_weight=2.0),  # 2 x 2
    }


def test_relation_weight_and_edge_weight_multiply_the_same_loss(runs):
    """relation.weight 4, edge weight 4, and 2 x 2 are one loss: bit-identical trained vectors."""
    assert not np.array_equal(runs["edge"], runs["base"])
    assert np.array_equal(runs["edge"], runs["relation"])
    assert np.array_equal(runs["edge"], runs["both"])


def test_a_weighted_edge_is_pulled_harder(runs):
    """Against the unweighted run from the same start, every edge of weight 4 ends with a higher score (its two
    nodes pulled closer), on average more than twice the unweighted score (initial scores average 0); the
    edges of weight 1 stay where the unweighted run left them, up to the indirect effect of the others."""
    base, weighted = _scores(runs["base"]), _scores(runs["edge"])
    gain = weighted - base
    assert (gain[0::2] > 0).all()
    assert weighted[0::2].mean() > 2 * base[0::2].mean() > 0
    assert np.abs(gain[1::2]).mean() < 0.05 * gain[0::2].mean()


def test_negative_weight_is_a_one_line_import_error(tmp_path, capsys):
    weights = np.ones(PAIRS)
    weights[7] = -0.5
    assert main(["import", _write_run(tmp_path, "neg", weights), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.tsv row 8: column 'weight'" in err and "weight -0.5 is negative" in err

"""Bad input to `tbg eval`: each case is one clear error line, never a traceback."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from builders import integer_model, make_config, write_checkpoint, write_graph

from tbg.cli import main
from tbg.config import dump_config
from tbg.errors import CheckpointError, ConsistencyError
from tbg.evaluation.checkpoint_eval import evaluate_checkpoint

TYPES = {"e": (20, 4, 1)}
RELS = [("r", "e", "e", "translation"), ("s", "e", "e", "linear")]


def config(run: str, types: dict = TYPES, relations: list = RELS, comparator: str = "dot"):
    """The run dir ``run`` with its graph in ``run/graph``."""
    graph = os.path.join(run, "graph")
    return make_config(
        graph, save_dir=run, types=types, relations=relations, overrides={"model.comparator": comparator}
    )


def setup(tmp_path, test_edges: int = 10):
    cfg = config(str(tmp_path / "run"))
    rng = np.random.default_rng(0)

    def edges(n: int):
        lhs, rhs, rel = rng.integers(0, 20, n), rng.integers(0, 20, n), rng.integers(0, 2, n)
        return lhs, rel, rhs

    splits = {"train": edges(40), "test": edges(test_edges)}
    perms = write_graph(cfg, splits, names=True)
    dense = {"e": rng.integers(-2, 3, (20, 4)).astype(np.float32)}
    write_checkpoint(cfg, perms, dense, integer_model(cfg, 0))
    return cfg


def cli_error(tmp_path, cfg, capsys, *extra: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    assert main(["eval", str(path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tbg eval: error: ")
    return err


def test_missing_checkpoint(tmp_path, capsys):
    cfg = setup(tmp_path)
    shutil.rmtree(os.path.join(cfg.training.save_dir, "checkpoints"))
    assert "no committed checkpoint" in cli_error(tmp_path, cfg, capsys)
    assert "not found" in cli_error(tmp_path, cfg, capsys, "--checkpoint", str(tmp_path / "missing"))


def test_graph_missing(tmp_path, capsys):
    cfg = setup(tmp_path)
    shutil.rmtree(cfg.graph_dir)
    assert "run `tbg import` first" in cli_error(tmp_path, cfg, capsys)


def test_empty_and_unknown_split(tmp_path, capsys):
    cfg = setup(tmp_path, test_edges=0)
    assert "has no edges" in cli_error(tmp_path, cfg, capsys)
    assert "'valid' was not imported" in cli_error(tmp_path, cfg, capsys, "--split", "valid")


def test_dim_mismatch(tmp_path):
    cfg = setup(tmp_path)
    bad = config(cfg.training.save_dir, {"e": (20, 6, 1)})
    with pytest.raises(ConsistencyError, match=r"tables\[0\]\.embedding_dim: 6 but the checkpoint .* trained with 4"):
        evaluate_checkpoint(bad, "test")


def test_relation_and_comparator_mismatch(tmp_path):
    cfg = setup(tmp_path)
    other_op = config(cfg.training.save_dir, relations=[RELS[0], ("s", "e", "e", "diagonal")])
    with pytest.raises(ConsistencyError, match=r"model\.relations\[1\]: s \(e->e, diagonal\) but the checkpoint"):
        evaluate_checkpoint(other_op, "test")
    other_cmp = config(cfg.training.save_dir, comparator="cos")
    with pytest.raises(ConsistencyError, match="model.comparator: 'cos' but the checkpoint .* trained with 'dot'"):
        evaluate_checkpoint(other_cmp, "test")


def test_shard_shape_and_relations_file_mismatch(tmp_path):
    """Without config.yaml in the checkpoint the shard shapes and relations.h5 still catch a mismatch."""
    cfg = setup(tmp_path)
    ckpt = os.path.join(cfg.training.save_dir, "checkpoints", "v0000000001")
    os.remove(os.path.join(ckpt, "config.yaml"))
    with open(os.path.join(ckpt, "progress.json")) as fh:  # as a format 1 checkpoint (no file list)
        progress = {k: v for k, v in json.load(fh).items() if k not in ("files", "checksum")}
    with open(os.path.join(ckpt, "progress.json"), "w") as fh:
        json.dump({**progress, "format_version": 1}, fh)
    bad = config(cfg.training.save_dir, {"e": (20, 6, 1)})
    with pytest.raises(ConsistencyError, match=r"shard shape \(20, 4\), the graph and config need \(20, 6\)"):
        evaluate_checkpoint(bad, "test")
    more = config(cfg.training.save_dir, relations=[*RELS, ("t", "e", "e", "affine")])
    with pytest.raises(ConsistencyError, match="model.relations: the config has 3 relations, the graph at"):
        evaluate_checkpoint(more, "test")
    ops = config(cfg.training.save_dir, relations=[RELS[0], ("s", "e", "e", "complex_diagonal")])
    with pytest.raises(CheckpointError, match="relations.h5 does not match"):
        evaluate_checkpoint(ops, "test")


def test_non_finite_embeddings(tmp_path):
    cfg = setup(tmp_path)
    import h5py

    path = os.path.join(cfg.training.save_dir, "checkpoints", "v0000000001", "embeddings", "e_0.h5")
    with h5py.File(path, "r+") as f:
        f["embeddings"][3, 1] = np.nan
    with pytest.raises(CheckpointError, match="NaN or inf"):
        evaluate_checkpoint(cfg, "test")

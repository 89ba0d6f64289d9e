"""A checkpoint is bound to the graph import it was trained on: a re-import is refused, not silently misread."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import random_index_edges, twhin_config, write_parquet

from tbg.checkpoint import CheckpointStore
from tbg.errors import TbgError
from tbg.evaluation.checkpoint_eval import evaluate_checkpoint
from tbg.graph import Graph
from tbg.importer import import_graph
from tbg.train.trainer import Trainer

RELS = [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("follow", "user", "user")]


def test_reimported_graph_is_refused_by_eval_and_resume(tmp_path: Path) -> None:
    edges = random_index_edges(400, 5, {"user": 50, "tweet": 30}, RELS)
    write_parquet(tmp_path / "e.parquet", {k: edges[k] for k in ("lhs", "rel", "rhs")})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    cfg.training.save_dir = str(tmp_path / "run")
    cfg.training.num_train_steps = 2
    import_graph(cfg, progress=False)
    first = Graph(cfg.graph_dir).import_id
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    trainer.run()
    assert CheckpointStore(cfg.training.save_dir).require_latest().progress["graph_import_id"] == first
    evaluate_checkpoint(cfg, "valid", filtered=False, candidates="all")  # same import: fine

    import_graph(cfg, overwrite=True, progress=False)  # same data, new import
    assert Graph(cfg.graph_dir).import_id != first
    with pytest.raises(TbgError, match=f"trained on graph import {first}, but .* now holds import"):
        evaluate_checkpoint(cfg, "valid", filtered=False, candidates="all")
    cfg.training.num_train_steps = 4
    with pytest.raises(TbgError, match=f"trained on graph import {first}"):
        Trainer(cfg, progress=False).start()

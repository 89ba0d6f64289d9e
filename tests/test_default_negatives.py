"""The default negative scheme (``in_batch_scope: auto``): what it resolves to, and that training with it is
training with the scheme it names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_graphs import full_table, make_config, planted_graph

import tbg
from tbg.config import InBatchScope, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("in_batch", "uniform", "batch", "want"),
    [
        (50, 1000, 1000, (InBatchScope.batch, 1000)),  # uniform negatives too: the whole batch
        (2000, 10, 1000, (InBatchScope.batch, 2000)),
        (0, 1000, 1000, (InBatchScope.batch, 0)),  # in-batch negatives stay off
        (10, 0, 500, (InBatchScope.relation, 10)),  # in-batch only: TwHIN's scheme, S per relation
    ],
)
def test_auto_resolution(tmp_path, in_batch: int, uniform: int, batch: int, want: tuple) -> None:
    cfg = make_config(
        str(tmp_path), str(tmp_path / "g"),
        **{"train_data.in_batch_negatives": in_batch, "train_data.global_negatives": uniform,
           "train_data.per_replica_batch_size": batch},
    )  # fmt: skip
    assert cfg.train_data.in_batch_scope == InBatchScope.auto
    assert cfg.train_data.negative_scheme() == want


def test_explicit_scope_is_kept(tmp_path) -> None:
    for scope in ("relation", "batch", "chunk"):
        cfg = make_config(str(tmp_path), str(tmp_path / "g"), **{"train_data.in_batch_scope": scope})
        assert cfg.train_data.negative_scheme() == (InBatchScope(scope), 100)


def test_short_wordnet_config_gets_the_whole_batch() -> None:
    """configs/wordnet_short.yaml sets PBG-level keys only; the defaults give it the whole batch + 1000 uniform."""
    cfg = load_config(str(ROOT / "configs" / "wordnet_short.yaml"))
    assert cfg.train_data.negative_scheme() == (InBatchScope.batch, 1000)
    assert cfg.train_data.global_negatives == 1000 and cfg.train_data.per_replica_batch_size == 1000
    assert [str(t.optimizer.kind) for t in cfg.model.embeddings.tables] == ["adagrad"]
    text = (ROOT / "configs" / "wordnet_short.yaml").read_text()
    for key in ("in_batch_scope", "global_negatives_scope", "chunks_per_draw", "row_adagrad", "relation_sides"):
        assert key not in text
    # TwHIN's own config (in-batch negatives only) keeps TwHIN's per-relation meaning
    seed = load_config(str(ROOT / "configs" / "twhin_seed.yaml"))
    assert seed.train_data.negative_scheme() == (InBatchScope.relation, seed.train_data.in_batch_negatives)


def test_auto_trains_exactly_like_the_scheme_it_resolves_to(tmp_path) -> None:
    """Same seed, one worker: ``auto`` and explicit ``batch`` scope with S = batch size give identical tables."""
    planted_graph(str(tmp_path / "g"), edges=1200)
    over = {"training.num_epochs": 1, "train_data.in_batch_negatives": 5, "train_data.global_negatives": 20,
            "runtime.hogwild_workers": 1}  # fmt: skip
    auto = make_config(str(tmp_path / "auto"), str(tmp_path / "g"), **over)
    batch = make_config(
        str(tmp_path / "batch"), str(tmp_path / "g"),
        **(over | {"train_data.in_batch_scope": "batch", "train_data.in_batch_negatives": 100}),
    )  # fmt: skip
    relation = make_config(
        str(tmp_path / "rel"), str(tmp_path / "g"), **(over | {"train_data.in_batch_scope": "relation"})
    )
    for cfg in (auto, batch, relation):
        tbg.train(cfg, fresh=True)
    t_auto, t_batch, t_rel = (full_table(c.training.save_dir, str(tmp_path / "g"))[0] for c in (auto, batch, relation))
    assert torch.equal(t_auto, t_batch)
    assert not np.allclose(t_auto.numpy(), t_rel.numpy())

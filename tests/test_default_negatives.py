"""The default negative scheme (``in_batch_scope: auto``): what it resolves to, and that training with it is
training with the scheme it names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from builders import REPO, make_config, planted_graph
from readback import full_table

import tbg
from tbg.config import InBatchScope, load_config


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
    over = {"train_data.in_batch_negatives": in_batch, "train_data.global_negatives": uniform,
            "train_data.per_replica_batch_size": batch}  # fmt: skip
    cfg = make_config(tmp_path / "g", overrides=over)
    assert cfg.train_data.in_batch_scope == InBatchScope.auto
    assert cfg.train_data.negative_scheme() == want


def test_explicit_scope_is_kept(tmp_path) -> None:
    for scope in ("relation", "batch", "chunk"):
        cfg = make_config(tmp_path / "g", overrides={"train_data.in_batch_scope": scope})
        assert cfg.train_data.negative_scheme() == (InBatchScope(scope), 100)


def test_short_wordnet_config_gets_the_whole_batch() -> None:
    """configs/wordnet_short.yaml sets PBG-level keys only; the defaults give it the whole batch + 1000 uniform."""
    cfg = load_config(str(REPO / "configs" / "wordnet_short.yaml"))
    assert cfg.train_data.negative_scheme() == (InBatchScope.batch, 1000)
    assert cfg.train_data.global_negatives == 1000 and cfg.train_data.per_replica_batch_size == 1000
    assert [str(t.optimizer.kind) for t in cfg.model.embeddings.tables] == ["adagrad"]
    text = (REPO / "configs" / "wordnet_short.yaml").read_text()
    for key in ("in_batch_scope", "global_negatives_scope", "chunks_per_draw", "row_adagrad", "relation_sides"):
        assert key not in text
    # TwHIN's own config (in-batch negatives only) keeps TwHIN's per-relation meaning
    seed = load_config(str(REPO / "configs" / "twhin_seed.yaml"))
    assert seed.train_data.negative_scheme() == (InBatchScope.relation, seed.train_data.in_batch_negatives)


def test_auto_trains_exactly_like_the_scheme_it_resolves_to(tmp_path) -> None:
    """Same seed, one worker: ``auto`` and explicit ``batch`` scope with S = batch size give identical tables."""
    over = {"training.num_epochs": 1, "train_data.in_batch_negatives": 5, "train_data.global_negatives": 20,
            "runtime.hogwild_workers": 1}  # fmt: skip
    graph = tmp_path / "g"
    auto = make_config(graph, save_dir=tmp_path / "auto", overrides=over)
    batch_over = over | {"train_data.in_batch_scope": "batch", "train_data.in_batch_negatives": 100}
    batch = make_config(graph, save_dir=tmp_path / "batch", overrides=batch_over)
    relation = make_config(graph, save_dir=tmp_path / "rel", overrides=over | {"train_data.in_batch_scope": "relation"})
    planted_graph(auto, edges=1200)
    for cfg in (auto, batch, relation):
        tbg.train(cfg, fresh=True)
    t_auto, t_batch, t_rel = (full_table(c.training.save_dir, str(graph))[0] for c in (auto, batch, relation))
    assert torch.equal(t_auto, t_batch)
    assert not np.allclose(t_auto.numpy(), t_rel.numpy())

"""The training step has no host-sync op (tools/bench/step_profile.py's count): on a GPU each one stalls it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from builders import TYPED_RELATIONS, TYPED_TYPES, make_config, planted_graph, typed_graph

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench" / "step_profile.py"


def _profiler():
    spec = importlib.util.spec_from_file_location("step_profile", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCHEMES = {
    # PBG's batched negatives (configs/wordnet.yaml's scheme), row-wise Adagrad
    "chunk": {"train_data.in_batch_scope": "chunk", "train_data.in_batch_negatives": 20,
              "train_data.global_negatives_scope": "chunk", "train_data.global_negatives_chunks_per_draw": 2,
              "optimizer": {"row_adagrad": {"lr": 0.1}}},
    # TwHIN's per-relation in-batch negatives (fewer slots than the batch) + shared uniform, Adam
    "relation": {"train_data.in_batch_scope": "relation", "train_data.in_batch_negatives": 10,
                 "optimizer": {"adam": {"lr": 0.01}}},
    "batch": {"train_data.in_batch_scope": "batch", "train_data.in_batch_negatives": 30},
}  # fmt: skip


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_training_step_has_no_sync_op(scheme, tmp_path) -> None:
    over = dict(SCHEMES[scheme])
    optimizer = over.pop("optimizer", None)
    cfg = make_config(tmp_path / "g", optimizer=optimizer, overrides=over)
    planted_graph(cfg, edges=1500)
    out = _profiler().profile_steps(cfg, 2)
    assert out["sync_ops"] == {} and out["sync_ops_per_step"] == 0, out["sync_ops"]
    assert out["aten_ops_per_step"]["nested"] > 0


def test_a_multi_group_training_step_has_no_sync_op(tmp_path) -> None:
    """Relations of three (lhs type, rhs type) groups: each batch holds one group (the edge stream's layout),
    so the step never splits a batch on the device."""
    over = {"train_data.per_replica_batch_size": 50, "train_data.in_batch_negatives": 20}
    cfg = make_config(tmp_path / "g", types=TYPED_TYPES, relations=TYPED_RELATIONS, overrides=over)
    typed_graph(cfg, edges=3000)
    out = _profiler().profile_steps(cfg, 2)
    assert out["sync_ops"] == {} and out["sync_ops_per_step"] == 0, out["sync_ops"]
    assert out["aten_ops_per_step"]["nested"] > 0

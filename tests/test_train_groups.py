"""Relations of several (lhs type, rhs type) groups: the edge stream lays each chunk out as one-group batches,
every edge trains once per epoch, and a run stopped inside a bucket resumes exactly."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from builders import TYPED_RELATIONS, TYPED_TYPES, make_config, typed_graph
from readback import full_table

from tbg import api
from tbg.graph import Graph
from tbg.train.batch_scorer import relation_groups
from tbg.train.edge_stream import EdgeSource, batches

BATCH = 50


def typed_config(tmp_path, **over):  # noqa: ANN001, ANN201
    overrides = {"train_data.per_replica_batch_size": BATCH, "train_data.in_batch_negatives": 20,
                 "training.num_epochs": 2, "training.max_edges_per_chunk": 700, **over}  # fmt: skip
    return make_config(tmp_path / "g", types=TYPED_TYPES, relations=TYPED_RELATIONS, overrides=overrides)


def _epoch(source: EdgeSource, epoch: int, bucket, position: int = 0) -> list[tuple[int, object]]:  # noqa: ANN001
    return [pb for chunk in source.chunks(epoch, bucket, position) for pb in batches(chunk, BATCH, position)]


def test_a_multi_group_epoch_is_one_group_batches_holding_every_edge_once(tmp_path) -> None:
    cfg = typed_config(tmp_path)
    typed_graph(cfg)
    graph = Graph(cfg.graph_dir)
    groups, rel_group = relation_groups(cfg.model.relations)
    assert len(groups) == 3
    group_of = np.asarray(rel_group)
    with ThreadPoolExecutor(1) as pool:
        source = EdgeSource(graph, "train", 700, torch.device("cpu"), 0, pool, rel_group=group_of, batch_size=BATCH)
        mixed = 0
        for bucket in graph.buckets("train"):
            stored = graph.read_bucket("train", *bucket)
            want = Counter(zip(stored.lhs.tolist(), stored.rhs.tolist(), stored.rel.tolist()))
            chunks = -(-len(stored) // 700)
            orders = []
            for epoch in (0, 1):
                run = _epoch(source, epoch, bucket)
                got: Counter = Counter()
                partial: Counter = Counter()
                last = 0
                for position, b in run:
                    assert position - last == len(b) and 0 < len(b) <= BATCH  # contiguous batches
                    last = position
                    assert set(group_of[b.rel.numpy()].tolist()) == {b.group}  # one group, the one it says
                    partial[b.group] += len(b) < BATCH
                    got.update(zip(b.lhs.tolist(), b.rhs.tolist(), b.rel.tolist()))
                assert got == want and last == len(stored)  # every edge exactly once
                assert all(k <= chunks for k in partial.values())  # at most one short batch per group and chunk
                orders.append([b.group for _, b in run])
                # resume at any batch end gives exactly the rest of the epoch
                for cut in (1, len(run) // 2, len(run) - 1):
                    rest = _epoch(source, epoch, bucket, run[cut - 1][0])
                    assert [p for p, _ in rest] == [p for p, _ in run[cut:]]
                    for (_, x), (_, y) in zip(rest, run[cut:], strict=True):
                        assert x.group == y.group and torch.equal(x.lhs, y.lhs) and torch.equal(x.rel, y.rel)
            if len(set(orders[0])) > 1:  # groups interleave, per epoch anew
                mixed += 1
                assert orders[0] != orders[1] and orders[0] != sorted(orders[0])
    assert mixed


def test_a_multi_group_run_stopped_inside_a_bucket_resumes_exactly(tmp_path) -> None:
    """Stop at step 7 (inside the first bucket's first chunk), resume to the end: the tables equal an
    uninterrupted run's, and every edge of both epochs was seen once."""
    ref_cfg = typed_config(tmp_path, **{"training.save_dir": str(tmp_path / "ref")})
    typed_graph(ref_cfg)
    ref = api.train(ref_cfg)
    cut_cfg = typed_config(tmp_path, **{"training.save_dir": str(tmp_path / "cut"), "training.num_train_steps": 7})
    first = api.train(cut_cfg)
    assert first["step"] == 7
    rest = api.train(typed_config(tmp_path, **{"training.save_dir": str(tmp_path / "cut")}))
    assert rest["step"] == ref["step"] and rest["edges"] + first["edges"] == ref["edges"] == 2 * 3000
    for etype in TYPED_TYPES:
        a, _ = full_table(str(tmp_path / "ref"), ref_cfg.graph_dir, etype)
        b, _ = full_table(str(tmp_path / "cut"), ref_cfg.graph_dir, etype)
        assert torch.equal(a, b), etype

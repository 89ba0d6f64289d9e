"""runtime.memory_budget: num_partitions auto at import, the one-line refusal, overlapped partition I/O that
trains bit-identically to synchronous I/O, and swaps per epoch against their lower bound."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import make_config, planted_graph, random_index_edges, write_parquet
from readback import full_table

import tbg
from tbg import memory
from tbg.checkpoint import CheckpointStore
from tbg.cli import main
from tbg.config import dump_config
from tbg.importer import import_graph
from tbg.train.bucket_order import bucket_order
from tbg.train.partition_buffer import swap_lower_bound, swaps

RELS = [("r0", "node", "node", "translation")]


def _source(tmp_path, n: int = 20000, edges: int = 3000) -> str:
    cols = random_index_edges(edges, 1, {"node": n}, RELS)
    write_parquet(tmp_path / "src" / "edges.parquet", {k: cols[k] for k in ("lhs", "rel", "rhs")})
    return str(tmp_path / "src" / "edges.parquet")


def _cfg(tmp_path, parts, budget: str | None, name: str = "g", n: int = 20000):
    src = _source(tmp_path, n) if not (tmp_path / "src").exists() else str(tmp_path / "src" / "edges.parquet")
    overrides = {"validation_data.limit": 100, "graph.id_mode": "indices"}
    if budget is not None:
        overrides["runtime.memory_budget"] = budget
    return make_config(
        tmp_path / name, types={"node": (n, 16, parts)}, relations=RELS, train=src, valid=src, overrides=overrides
    )


def test_parse_size() -> None:
    assert memory.parse_size("768MiB") == 768 << 20
    assert memory.parse_size("8GiB") == 8 << 30
    assert memory.parse_size("2.5GB") == 2_500_000_000
    assert memory.parse_size("4096") == 4096
    for bad in ("12XB", "-1GiB", "", "0"):
        with pytest.raises(ValueError):
            memory.parse_size(bad)


def test_auto_picks_the_smallest_overlapping_partition_count_at_import(tmp_path) -> None:
    cfg = _cfg(tmp_path, "auto", "3MiB")
    summary = import_graph(cfg, progress=False)
    p = summary.entity_types["node"][1]
    assert p > 1
    counts = {"node": 20000}
    assert memory.plan(cfg, counts, {"node": p}).overlaps  # resident + read ahead + written back fit
    assert not memory.plan(cfg, counts, {"node": p - 1}).overlaps  # and no smaller P does
    # train/eval/export take P from the graph: a short run trains with it
    cfg = _cfg(tmp_path, "auto", "3MiB")
    out = tbg.train(cfg)
    assert out["memory"]["num_partitions"] == {"node": p} and out["memory"]["overlap"]
    report = tbg.evaluate(cfg, split="valid")
    assert report["metrics"]["overall"]["mean"]["mrr"] > 0
    big = _cfg(tmp_path, "auto", "64MiB", name="g2")
    assert import_graph(big, progress=False).entity_types["node"][1] == 1  # fits whole: nothing to swap


def _write(tmp_path, cfg, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(dump_config(cfg))
    return str(path)


def test_a_budget_too_small_for_two_partitions_is_one_line(tmp_path, capsys) -> None:
    cfg = _cfg(tmp_path, 2, "1MiB")
    assert main(["import", _write(tmp_path, cfg, "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runtime.memory_budget" in err and "cannot hold" in err
    assert "Traceback" not in err
    # imported without a budget, then trained with one that cannot hold a bucket
    import_graph(_cfg(tmp_path, 2, None), progress=False)
    assert main(["train", _write(tmp_path, cfg, "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runtime.memory_budget" in err


def _planted(tmp_path, budget: str | int | None, name: str, order: str = "inside_out"):
    overrides = {"training.num_epochs": 3, "training.bucket_order": order}
    if budget is not None:
        overrides["runtime.memory_budget"] = str(budget)
    cfg = make_config(tmp_path / "graph", save_dir=tmp_path / name, partitions=4, overrides=overrides)
    return cfg


def _epochs(cfg) -> list[dict]:
    records = [json.loads(line) for line in open(f"{cfg.training.save_dir}/metrics.jsonl")]
    return [r for r in records if "epoch_end" in r]


def test_overlapped_partition_io_and_the_buffer_train_bit_identically_and_report_swaps(tmp_path) -> None:
    """Synchronous I/O, overlapped I/O and a partition buffer holding more than the bucket's own partitions
    train the same values for the same bucket order; swaps are reported against their lower bound."""
    planted_graph(_planted(tmp_path, None, "setup"))
    plan = memory.plan(_planted(tmp_path, "4MiB", "plain"), {"node": 400}, {"node": 4})
    assert plan.chunk_edges == memory.MIN_CHUNK_EDGES  # (so every budget below cuts the same chunks)
    tight = plan.resident + plan.edges + plan.in_flight // 2  # a bucket fits, the in-flight partitions do not
    roomy = tight + plan.in_flight // 2  # room for four partitions: three indices resident beside one in flight
    runs = {}
    for name, budget in (("plain", None), ("sync", tight), ("async", roomy)):
        cfg = _planted(tmp_path, budget, name)
        runs[name] = (cfg, tbg.train(cfg))
    assert runs["sync"][1]["memory"]["overlap"] is False and runs["sync"][1]["memory"]["buffer_slots"] is None
    assert runs["async"][1]["memory"]["overlap"] is True and runs["async"][1]["memory"]["buffer_slots"] == 3
    tables = {}
    for name, (cfg, _) in runs.items():
        ckpt = CheckpointStore(cfg.training.save_dir).latest()
        tables[name] = full_table(ckpt.path, cfg.graph_dir)[0].numpy()
    assert np.array_equal(tables["plain"], tables["sync"])
    assert np.array_equal(tables["plain"], tables["async"])
    for name, (cfg, summary) in runs.items():
        epochs = _epochs(cfg)
        assert [r["epoch_end"] for r in epochs] == [0, 1, 2]
        slots = summary["memory"]["buffer_slots"]
        assert epochs[0]["swap_lower_bound"] == swap_lower_bound(4, 4, True, slots=slots) == (7 if not slots else 5)
        if not slots:
            assert epochs[0]["swaps"] == 7  # inside_out meets the bound with only the bucket's own resident
        for r in epochs:
            assert r["swap_lower_bound"] <= r["swaps"] <= r["swap_lower_bound"] + 2
            # a partition needed again while its write-back is in flight is taken back, not read
            assert r["partition_loads"] == r["swaps"] if name == "sync" else r["partition_loads"] <= r["swaps"]
            assert r["bytes_written"] > 0
        assert epochs[1]["bytes_read"] > 0
        assert summary["epochs"] == [{k: v for k, v in r.items() if k not in ("step", "time")} for r in epochs]
    # the buffer-aware order (the default) meets the bound for three resident indices
    cfg = _planted(tmp_path, roomy, "buffer", order="buffer")
    tbg.train(cfg)
    loads = [r["partition_loads"] for r in _epochs(cfg)]
    assert _epochs(cfg)[0]["swaps"] == 5 and sum(loads) <= sum(r["partition_loads"] for r in _epochs(runs["async"][0]))


def test_the_buffer_order_plans_for_its_slots() -> None:
    for shared in (True, False):
        for p in (2, 5, 8):
            for slots in (None, 2, 3, 4):
                order = bucket_order(p, p, "buffer", seed=1, epoch=0, shared=shared, slots=slots)
                assert sorted(order) == [(i, j) for i in range(p) for j in range(p)]
                got, bound = swaps(order, p, p, shared, slots=slots), swap_lower_bound(p, p, shared, slots=slots)
                assert bound <= got <= bound + ((p if shared else 2 * p) if slots and slots > 2 else 0)
                if slots and slots > 2 and p > slots:  # more resident: fewer swaps than a bucket's own two
                    assert got < swaps(bucket_order(p, p, "inside_out", 1, 0, shared=shared), p, p, shared)
    # P = 19 with three resident (the scale bench's shape): about half the swaps of two
    assert swaps(bucket_order(19, 19, "buffer", 0, 0, slots=3), 19, 19, True, slots=3) <= 95 < 172


@pytest.mark.parametrize("shared", [True, False])
def test_inside_out_meets_the_swap_lower_bound(shared: bool) -> None:
    for p in range(1, 9):
        for epoch in range(3):
            order = bucket_order(p, p, "inside_out", seed=epoch, epoch=epoch, shared=shared)
            assert sorted(order) == [(i, j) for i in range(p) for j in range(p)]
            assert swaps(order, p, p, shared) == swap_lower_bound(p, p, shared)
            for other in ("random", "affinity"):
                assert swaps(bucket_order(p, p, other, 0, epoch, shared=shared), p, p, shared) >= swaps(
                    order, p, p, shared
                )
    assert swaps(bucket_order(4, 1, "inside_out", 0, 0, shared=False), 4, 1, False) == swap_lower_bound(4, 1, False)


def test_resident_bytes_is_this_process_rss() -> None:
    """The bucket-change heap trim compares this figure with the budget plus the fixed overhead."""
    from tbg import runtime

    with open("/proc/self/status") as fh:
        vm_rss = next(int(line.split()[1]) << 10 for line in fh if line.startswith("VmRSS:"))
    got = runtime.resident_bytes()
    assert abs(got - vm_rss) < 64 << 20
    assert memory.TRIM_ABOVE < memory.FIXED_OVERHEAD

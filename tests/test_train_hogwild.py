"""Hogwild workers (runtime.hogwild_workers): exact step bookkeeping, checkpoints, quality, errors."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from builders import make_config, planted_graph
from readback import rank_quality

from tbg import runtime
from tbg.checkpoint import CheckpointStore
from tbg.errors import TbgError
from tbg.train.trainer import Trainer


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    root = tmp_path_factory.mktemp("hogwild")
    splits, _ = planted_graph(make_config(str(root / "g"), partitions=2))
    return str(root / "g"), splits


def _trainer(cfg) -> Trainer:
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    return trainer


def _hogwild_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tbg-hogwild")]


@pytest.mark.parametrize(
    ("device", "threads", "want", "expected"),
    [("cpu", 2, None, (2, 1)), ("cpu", 8, None, (4, 2)), ("cpu", 1, None, (1, 1)), ("cpu", 2, 3, (3, 1)),
     ("cpu", 8, 1, (1, 8)), ("cuda", 8, None, (1, 8))],
)  # fmt: skip
def test_worker_count(device, threads, want, expected, tmp_path) -> None:
    cfg = make_config(
        tmp_path / "g", save_dir=tmp_path, overrides={"runtime.num_threads": threads, "runtime.hogwild_workers": want}
    )
    assert runtime.hogwild_workers(cfg, torch.device(device)) == expected


@pytest.mark.parametrize(
    ("batch", "accumulation", "expected"),
    [(10_000, None, (2, 1)), (10_001, None, (1, 2)), (5_000, 4, (1, 2)), (20_000, None, (1, 2))],
)  # fmt: skip
def test_auto_runs_one_worker_for_large_updates(batch, accumulation, expected, tmp_path) -> None:
    """Lock-free workers whose updates touch most rows at once collapse training: auto takes one above 10k edges
    per update; an explicit count is kept."""
    over = {"runtime.num_threads": 2, "train_data.per_replica_batch_size": batch}
    if accumulation:
        over["training.gradient_accumulation"] = accumulation
    cfg = make_config(tmp_path / "g", save_dir=tmp_path, overrides=over)
    assert runtime.hogwild_workers(cfg, torch.device("cpu")) == expected
    cfg.runtime.hogwild_workers = 2
    assert runtime.hogwild_workers(cfg, torch.device("cpu")) == (2, 1)


def test_workers_need_cpu(tmp_path) -> None:
    over = {"runtime.hogwild_workers": 2, "runtime.device": "cuda"}
    cfg = make_config(tmp_path / "g", save_dir=tmp_path, overrides=over)
    with pytest.raises(TbgError, match=r"^runtime.hogwild_workers: 2 workers need device cpu, got cuda$"):
        runtime.hogwild_workers(cfg, torch.device("cuda"))


def test_auto_device_on_a_gpu_host_takes_one_worker(tmp_path) -> None:
    """hogwild_workers sized for CPU hosts: with device auto, a GPU host runs one worker instead of failing."""
    over = {"runtime.hogwild_workers": 2, "runtime.device": "auto", "runtime.num_threads": 4}
    cfg = make_config(tmp_path / "g", save_dir=tmp_path, overrides=over)
    assert runtime.hogwild_workers(cfg, torch.device("cuda")) == (1, 4)


def test_replicas_share_parameters_not_gradients(graph, tmp_path) -> None:
    gdir, _ = graph
    trainer = _trainer(
        make_config(gdir, save_dir=str(tmp_path / "r"), partitions=2, overrides={"runtime.hogwild_workers": 3})
    )
    assert len(trainer.workers) == 3
    real = list(trainer.model.parameters())
    for worker in trainer.workers[1:]:
        assert [p.data_ptr() for p in worker.params] == [p.data_ptr() for p in real]
        assert all(p is not q for p, q in zip(worker.params, real))
        assert worker.scorer is not trainer.scorer and worker.scorer.model is not trainer.model


def test_hogwild_run_books_every_step_and_checkpoints_exactly(graph, tmp_path) -> None:
    """Two workers, groups of 3 micro-batches, checkpoints every 7 steps, validation every 10: every step is
    logged once and in order, and each checkpoint holds exactly the steps before its position."""
    gdir, splits = graph
    over = {"runtime.num_threads": 2, "runtime.hogwild_workers": 2, "training.num_epochs": 5,
            "training.gradient_accumulation": 3, "training.checkpoint_every_n": 7, "training.train_log_every_n": 1,
            "training.eval_log_every_n": 10}  # fmt: skip
    cfg = make_config(gdir, save_dir=str(tmp_path / "h"), partitions=2, overrides=over)
    trainer = _trainer(cfg)
    rel_before = [p.detach().clone() for p in trainer.model.parameters()]
    summary = trainer.run()
    assert not _hogwild_threads()
    assert summary["hogwild_workers"] == 2 and summary["epoch"] == 5 and summary["edges"] == 5 * 6000
    records = [json.loads(x) for x in open(tmp_path / "h" / "metrics.jsonl")]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, summary["step"] + 1))
    assert [r["step"] for r in records if "val_loss" in r] == list(range(10, summary["step"] + 1, 10))
    store = CheckpointStore(cfg.training.save_dir)
    final = store.latest().progress
    assert final["finished"] and final["step"] == summary["step"] and final["edges_seen"] == 5 * 6000
    assert all(p.grad is None for w in trainer.workers for p in w.params)  # every gradient was applied
    assert all(not torch.equal(p, q) for p, q in zip(trainer.model.parameters(), rel_before))
    quality = rank_quality(cfg, splits["test"])
    assert quality["auc"] > 0.85, quality


def test_hogwild_stops_at_num_train_steps_and_resumes(graph, tmp_path) -> None:
    """Stop at num_train_steps, resume to a later one: the same steps and edges as one worker books."""
    gdir, _ = graph

    def progress(workers: int, steps: int, name: str) -> tuple[dict, dict]:
        over = {"runtime.num_threads": 2, "runtime.hogwild_workers": workers, "training.num_train_steps": steps,
                "training.checkpoint_every_n": 20}  # fmt: skip
        cfg = make_config(gdir, save_dir=str(tmp_path / name), partitions=2, overrides=over)
        trainer = Trainer(cfg, progress=False)
        how = trainer.start()
        summary = trainer.run()
        return summary, {**CheckpointStore(cfg.training.save_dir).latest().progress, "how": how}

    for steps in (45, 130):  # 60 steps an epoch, partial batches at the ends of the 4 buckets
        one, one_ckpt = progress(1, steps, "one")
        two, two_ckpt = progress(2, steps, "two")
        assert two["step"] == one["step"] == steps and two["edges"] == one["edges"]
        keys = ("step", "epoch", "bucket_index", "position", "edges_seen")
        assert [two_ckpt[k] for k in keys] == [one_ckpt[k] for k in keys]
    assert "at step 45" in two_ckpt["how"] and two["steps"] == 85


def test_worker_error_stops_the_run(graph, tmp_path) -> None:
    gdir, _ = graph
    over = {"runtime.num_threads": 2, "runtime.hogwild_workers": 2}
    cfg = make_config(gdir, save_dir=str(tmp_path / "e"), partitions=2, overrides=over)
    trainer = _trainer(cfg)

    def broken(*_args, **_kw):
        raise RuntimeError("worker exploded")

    trainer.workers[1].scorer.score = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="worker exploded"):
        trainer.run()
    assert not _hogwild_threads()

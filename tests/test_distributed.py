"""Distributed training under torchrun (gloo, loopback, 2 trainers): exactly-once buckets, quality against one
process, a trainer killed with and without restarts, an unreachable store.  ``--standalone`` picks free ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from builders import child_env, make_config, planted_graph
from readback import rank_quality

from tbg.config import dump_config

TRAIN_EDGES = 6000
# rhs MRR of 2 trainers vs 1 on the planted graph (3 epochs): 0.085 vs 0.073 measured (random: ~0.016;
# the planted clusters cap it near 0.09)
MRR_TOLERANCE = 0.03

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find a trainer")


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    root = tmp_path_factory.mktemp("dist")
    splits, _ = planted_graph(make_config(str(root / "g"), partitions=4), edges=TRAIN_EDGES)
    return str(root / "g"), splits


def _config(graph_dir: str, tmp_path: Path, epochs: int, **overrides: object):
    cfg = make_config(
        graph_dir,
        save_dir=str(tmp_path / "run"),
        partitions=4,
        overrides={"training.num_epochs": epochs, "runtime.distributed.heartbeat_s": 0.5, **overrides},
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    return cfg, str(path)


def _torchrun(cfg_path: str, *flags: str, restarts: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           f"--max-restarts={restarts}", "-m", "tbg", "train", cfg_path, "--no-progress", *flags]  # fmt: skip
    return subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _progress(save_dir: str) -> dict:
    root = Path(save_dir) / "checkpoints"
    return json.loads((root / (root / "latest").read_text().strip() / "progress.json").read_text())


def _latest_version(save_dir: str) -> int:
    try:
        name = (Path(save_dir) / "checkpoints" / "latest").read_text().strip()
    except OSError:
        return 0
    return int(name[1:]) if name.startswith("v") else 0


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the trainer with ``RANK=rank`` among ``parent``'s children."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent and f"RANK={rank}".encode() in environ:
            return int(entry)
    return None


def _kill_rank_after_commit(proc: subprocess.Popen, save_dir: str, rank: int = 1, version: int = 3) -> None:
    deadline = time.monotonic() + 90
    while _latest_version(save_dir) < version:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint committed"
        time.sleep(0.1)
    pid = _rank_pid(proc.pid, rank)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def test_two_trainers_exactly_once_and_quality_of_one(graph, tmp_path) -> None:
    """`tbg train --nproc 2`: every bucket once per epoch, both ranks log, eval reads the save_dir, and the
    final MRR is within MRR_TOLERANCE of one process's on the planted graph."""
    graph_dir, splits = graph
    one, _ = _config(graph_dir, tmp_path / "one", epochs=3)
    subprocess.run([sys.executable, "-m", "tbg", "train", str(tmp_path / "one" / "cfg.yaml"), "--no-progress"],
                   env=child_env(), check=True, capture_output=True)  # fmt: skip
    assert _progress(one.training.save_dir)["epoch_edges"] == [TRAIN_EDGES] * 3  # one process records it too
    two, path = _config(graph_dir, tmp_path / "two", epochs=3)
    proc = subprocess.run([sys.executable, "-m", "tbg", "train", path, "--nproc", "2", "--no-progress", "--json"],
                          env=child_env(), capture_output=True, text=True, timeout=150)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["edges"] == 3 * TRAIN_EDGES
    progress = _progress(two.training.save_dir)
    assert progress["finished"] and progress["world_size"] == 2
    assert progress["epoch_edges"] == [TRAIN_EDGES] * 3
    # partition traffic per epoch over both trainers: each partition a bucket used is written once (the commit),
    # and fewer are read than used: kept from the trainer's previous bucket, or read ahead while it trained
    io = summary["epochs_io"]
    assert [e["epoch"] for e in io] == [0, 1, 2]
    assert all(e["writes"] == e["uses"] > 0 for e in io), io
    assert sum(e["kept"] for e in io) > 0 and sum(e["reads"] for e in io[1:]) < sum(e["uses"] for e in io[1:]), io
    mine = summary["partition_io"]  # rank 0's: each use came from one place; a read ahead is used or dropped
    assert mine["uses"] == mine["kept"] + mine["fresh"] + mine["reads"] - mine["wasted"], mine
    records = [json.loads(line) for line in (Path(two.training.save_dir) / "metrics.jsonl").read_text().splitlines()]
    assert {r["rank"] for r in records} == {0, 1}
    mrr_one = rank_quality(one, splits["test"])["mrr"]
    mrr_two = rank_quality(two, splits["test"])["mrr"]
    assert mrr_one > 0.05 and abs(mrr_two - mrr_one) <= MRR_TOLERANCE, (mrr_one, mrr_two)
    out = tmp_path / "eval.json"
    ev = subprocess.run([sys.executable, "-m", "tbg", "eval", path, "--json-out", str(out)], env=child_env(),
                        capture_output=True, text=True)  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    assert np.isfinite(json.loads(out.read_text())["metrics"]["overall"]["mean"]["mrr"])


def test_killed_trainer_without_restarts_stops_the_other_with_one_line(graph, tmp_path) -> None:
    cfg, path = _config(graph[0], tmp_path, epochs=8, **{"runtime.distributed.timeout_s": 20.0})
    proc = _torchrun(path)
    _kill_rank_after_commit(proc, cfg.training.save_dir)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert time.monotonic() - killed < 20
    lines = [line for line in err.splitlines() if line.startswith("tbg train: error:")]
    assert len(lines) == 1 and "lost rank 1" in lines[0], err
    assert not _progress(cfg.training.save_dir)["finished"]


def test_killed_trainer_with_restarts_completes_exactly_once(graph, tmp_path) -> None:
    """kill -9 of a trainer, torchrun restarts the group: every bucket once per epoch, and metrics.jsonl keeps
    no record of the lost round (each rank's steps rise strictly)."""
    cfg, path = _config(graph[0], tmp_path, epochs=6, **{"training.train_log_every_n": 1})
    proc = _torchrun(path, restarts=1)
    _kill_rank_after_commit(proc, cfg.training.save_dir)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "attempt 1" in err and "resumed from" in err
    progress = _progress(cfg.training.save_dir)
    assert progress["finished"] and progress["epoch_edges"] == [TRAIN_EDGES] * 6
    records = [json.loads(line) for line in (Path(cfg.training.save_dir) / "metrics.jsonl").read_text().splitlines()]
    for rank in (0, 1):
        steps = [r["step"] for r in records if r.get("rank") == rank and "loss" in r]
        assert steps and steps == sorted(set(steps)), (rank, steps)


def test_unreachable_store_is_one_line(graph, tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    _, path = _config(graph[0], tmp_path, epochs=1, **{"runtime.distributed.timeout_s": 2.0})
    env = {**child_env(), "WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "TORCHELASTIC_USE_AGENT_STORE": "True"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "tbg", "train", path], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tbg train")]
    assert len(lines) == 1 and f"cannot reach the torchrun store at 127.0.0.1:{port}" in lines[0], proc.stderr


def test_save_dir_on_gcs(graph, tmp_path, fake_gcs) -> None:
    """training.save_dir = gs://… (the real fake-gcs-server): partitions move through the bucket, rank 0
    commits versions there; every bucket once per epoch."""
    import gcsfs

    fs = gcsfs.GCSFileSystem(endpoint_url=fake_gcs, token="anon")
    fs.mkdir("tbg-dist")
    _, path = _config(graph[0], tmp_path, epochs=2, **{"training.save_dir": "gs://tbg-dist/run"})
    env = {**child_env(), "FSSPEC_GCS_TOKEN": "anon", "TBG_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "tbg", "train", path, "--nproc", "2", "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=150)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = fs.cat_file("tbg-dist/run/checkpoints/latest").decode().strip()
    progress = json.loads(fs.cat_file(f"tbg-dist/run/checkpoints/{name}/progress.json"))
    assert progress["finished"] and progress["epoch_edges"] == [TRAIN_EDGES] * 2
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("tbg-dist/run/partitions")) == [f"node_{p}.h5" for p in range(4)]
    for rel in progress["files"]:  # every file the version lists is there, with its size
        assert fs.size(f"tbg-dist/run/checkpoints/{name}/{rel}") == progress["files"][rel]["size"]
    ev = subprocess.run([sys.executable, "-m", "tbg", "eval", path], env=env, capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr  # eval reads the gs:// save_dir and writes its JSON there
    assert np.isfinite(json.loads(fs.cat_file("tbg-dist/run/eval_test.json"))["metrics"]["overall"]["mean"]["mrr"])
    out = tmp_path / "vectors"
    ex = subprocess.run([sys.executable, "-m", "tbg", "export", path, "--format", "npy", "--out", str(out)], env=env,
                        capture_output=True, text=True)  # fmt: skip
    assert ex.returncode == 0, ex.stderr
    assert any(out.iterdir())

"""Crash safety: `kill -9` a real `tbg train` subprocess mid-run, rerun it, and finish exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from builders import child_env, make_config, planted_graph
from readback import full_table, rank_quality

from tbg.checkpoint import CheckpointStore
from tbg.config import dump_config

EPOCHS, STEPS_PER_EPOCH = 25, 60


def _run(cfg_path: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tbg", "train", cfg_path, "--no-progress"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=child_env(), cwd=os.path.dirname(cfg_path), **kw,
    )  # fmt: skip


def _write(tmp_path, name: str, gdir: str, workers: int = 1) -> tuple[str, object]:
    over = {"training.num_epochs": EPOCHS, "training.checkpoint_every_n": 40, "runtime.hogwild_workers": workers,
            "runtime.num_threads": workers}  # fmt: skip
    cfg = make_config(gdir, save_dir=str(tmp_path / name), overrides=over)
    path = str(tmp_path / f"{name}.yaml")
    with open(path, "w") as fh:
        fh.write(dump_config(cfg))
    return path, cfg


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_then_resume_finishes_like_an_uninterrupted_run(tmp_path, workers) -> None:
    """One worker: the resumed run equals the uninterrupted one.  Two Hogwild workers (not bit-reproducible):
    it resumes at the checkpoint's step and finishes every step with the same quality."""
    gdir = str(tmp_path / "g")
    splits, _ = planted_graph(make_config(gdir))
    killed_path, killed_cfg = _write(tmp_path, "killed", gdir, workers)
    store = CheckpointStore(killed_cfg.training.save_dir)
    proc = _run(killed_path)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a committed mid-run checkpoint (not the first, not the last)
        latest = store.latest()
        if latest is not None and latest.progress["step"] >= 200:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = store.latest().progress
    assert 200 <= killed_at["step"] < EPOCHS * STEPS_PER_EPOCH and not killed_at["finished"]

    done = _run(killed_path)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "resumed from" in err and f"at step {killed_at['step']}" in err
    final = store.latest().progress
    assert final["step"] == EPOCHS * STEPS_PER_EPOCH and final["epoch"] == EPOCHS and final["finished"]
    assert final["edges_seen"] == EPOCHS * 6000

    again = _run(killed_path)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0 and "already finished" in err
    records = [json.loads(x, parse_constant=_no_constant) for x in open(tmp_path / "killed" / "metrics.jsonl")]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == EPOCHS * STEPS_PER_EPOCH  # cut back on resume: none twice
    if workers > 1:
        quality = rank_quality(killed_cfg, splits["test"])
        assert quality["auc"] > 0.85, quality
        return

    ref_path, ref_cfg = _write(tmp_path, "ref", gdir)
    ref = _run(ref_path)
    ref.communicate(timeout=300)
    assert ref.returncode == 0
    a, _ = full_table(killed_cfg.training.save_dir, gdir)
    b, _ = full_table(ref_cfg.training.save_dir, gdir)
    # same data order, negatives (seeded by step) and optimizer state: the resumed run equals the uninterrupted one
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def _no_constant(name: str) -> float:
    raise ValueError(f"bare {name} in metrics.jsonl (not JSON)")

"""Honest bookkeeping (issue 10 item 4): progress says `finished` whatever checkpoint_every_n is, a rerun of a
finished run trains nothing, and metrics.jsonl is strict JSON with no step logged twice after a resume."""

from __future__ import annotations

import json
import subprocess
import sys

from builders import child_env, make_config, planted_graph

from tbg.checkpoint import CheckpointStore
from tbg.cli import main
from tbg.config import dump_config


def _project(tmp_path, **over):
    cfg = make_config(tmp_path / "g", save_dir=tmp_path / "save", overrides=over)
    planted_graph(cfg)  # 6000 train edges: 60 steps of 100 per epoch
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    return str(path), cfg


def test_checkpoint_every_n_dividing_the_total_commits_finished(tmp_path, capsys) -> None:
    """120 steps (2 epochs), a checkpoint every 30: the last one is the end of the run."""
    path, cfg = _project(tmp_path, **{"training.num_epochs": 2, "training.checkpoint_every_n": 30})
    assert main(["train", path, "--no-progress"]) == 0
    store = CheckpointStore(cfg.training.save_dir)
    final = store.latest()
    assert final.progress["step"] == 120 and final.progress["finished"]
    assert (final.progress["epoch"], final.progress["bucket_index"], final.progress["position"]) == (2, 0, 0)
    assert store.versions()[-1] == final.name and final.version == 4  # steps 30, 60, 90, 120: no extra commit
    metrics = open(tmp_path / "save" / "metrics.jsonl").read()
    capsys.readouterr()
    assert main(["train", path, "--no-progress"]) == 0
    assert "already finished (step 120, epoch 2)" in capsys.readouterr().err
    assert store.latest().name == final.name
    assert open(tmp_path / "save" / "metrics.jsonl").read() == metrics


def test_the_last_record_of_an_epoch_end_is_its_own_epoch(tmp_path) -> None:
    path, cfg = _project(tmp_path, **{"training.num_epochs": 2, "training.train_log_every_n": 60})
    assert main(["train", path, "--no-progress"]) == 0
    records = [json.loads(line) for line in open(tmp_path / "save" / "metrics.jsonl")]
    assert [(r["step"], r["epoch"]) for r in records] == [(60, 0), (120, 1)]


def test_resume_cuts_metrics_back_to_the_resumed_step(tmp_path) -> None:
    """A run stopped at step 45 (num_train_steps) with a checkpoint every 20 and records every 5, then its last
    checkpoint removed by hand as a kill after step 40 would leave it: the rerun logs 45.. again, once."""
    path, cfg = _project(tmp_path, **{"training.num_train_steps": 45, "training.checkpoint_every_n": 20,
                                      "training.train_log_every_n": 5})  # fmt: skip
    assert main(["train", path, "--no-progress"]) == 0
    store = CheckpointStore(cfg.training.save_dir)
    assert store.latest().progress["step"] == 45
    # the state a kill -9 between the step-45 record and its commit leaves: latest = step 40, records to 45
    text = (tmp_path / "save" / "checkpoints" / "latest").read_text().replace(store.latest().name, "v0000000002")
    (tmp_path / "save" / "checkpoints" / "latest").write_text(text)
    with open(tmp_path / "save" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 50, "loss": 0.5')  # a record cut short by the kill
    assert store.latest().progress["step"] == 40
    cfg_text = open(path).read().replace("num_train_steps: 45", "num_train_steps: 60")
    open(path, "w").write(cfg_text)
    assert main(["train", path, "--no-progress"]) == 0
    records = [json.loads(line) for line in open(tmp_path / "save" / "metrics.jsonl")]
    assert [r["step"] for r in records] == list(range(5, 61, 5))


def test_a_tbg_train_process_ends_with_its_summary_written_and_its_run_committed(tmp_path) -> None:
    """The `tbg train` process skips the interpreter's teardown once the run is done: its stdout (a file, so
    fully buffered) still holds the whole JSON summary, the last checkpoint is committed and finished, and the
    save_dir is free for the next `tbg train` at once."""
    path, cfg = _project(tmp_path, **{"training.num_epochs": 1})
    cmd = [sys.executable, "-m", "tbg", "train", path, "--no-progress", "--json"]
    with open(tmp_path / "out.json", "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=child_env())
    assert proc.returncode == 0, proc.stderr
    (line,) = open(tmp_path / "out.json").read().splitlines()
    summary = json.loads(line)
    assert (summary["step"], summary["edges"]) == (60, 6000)
    final = CheckpointStore(cfg.training.save_dir).latest()
    assert final.progress["step"] == 60 and final.progress["finished"]
    again = subprocess.run(cmd[:-1], capture_output=True, text=True, env=child_env())
    assert again.returncode == 0 and "already finished (step 60, epoch 1)" in again.stderr, again.stderr

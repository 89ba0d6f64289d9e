"""Never commit garbage (issue 10 item 3): a non-finite loss or parameter stops `tbg train` with one line naming
the step and the table, the last good checkpoint stays `latest`; export and eval refuse non-finite vectors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from builders import child_env, make_config, planted_graph
from readback import full_table

from tbg.checkpoint import CheckpointStore
from tbg.cli import main
from tbg.config import dump_config

PLUGIN = '''"""logistic, but NaN from training step TBG_TEST_NAN_FROM (one loss call per step: both sides at
once), or in validation only (TBG_TEST_NAN_IN_VALIDATION): a plugin loss gone wrong (docs/extending.md)."""

import os

import torch
import torch.nn.functional as F

from tbg.model.losses import LOSSES, Loss


@LOSSES.register("poisoned")
class PoisonedLoss(Loss):
    calls = 0

    def __call__(self, logits, count):
        out = F.softplus(-logits[:, 0]) + F.softplus(logits[:, 1:]).sum(-1) / count.clamp_min(1)
        if torch.is_grad_enabled():
            PoisonedLoss.calls += 1
            start = os.environ.get("TBG_TEST_NAN_FROM")
            if start and PoisonedLoss.calls >= int(start):
                return out * float("nan")
        elif os.environ.get("TBG_TEST_NAN_IN_VALIDATION"):
            return out * float("nan")
        return out
'''

DRIVER = "import sys, poisoned_loss; from tbg.cli import main; raise SystemExit(main(sys.argv[1:]))"


def _project(tmp_path, table_lr: float | None = None, poisoned: bool = False, partitions: int = 1, **over):
    """A 60-step run (6000 edges, batches of 100) with ``over`` dotted settings; ``table_lr``: plain SGD;
    ``poisoned``: the plugin loss above (the config names it; only :func:`_train_poisoned` registers it)."""
    settings = {"training.num_epochs": 1, "training.checkpoint_every_n": 10, "training.train_log_every_n": 5,
                "model.loss": "logistic", **over}  # fmt: skip
    cfg = make_config(
        tmp_path / "g", save_dir=tmp_path / "save", partitions=partitions, overrides=settings,
        optimizer=None if table_lr is None else {"sgd": {"lr": table_lr}},
    )  # fmt: skip
    if not os.path.exists(tmp_path / "g"):
        planted_graph(cfg)
    text = dump_config(cfg)
    if poisoned:
        data = yaml.safe_load(text)
        data["model"]["loss"] = "poisoned"
        text = yaml.safe_dump(data)
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path), cfg


def _train_poisoned(tmp_path, path: str, **env: str) -> subprocess.CompletedProcess:
    """`tbg train` in a process that registered the plugin loss (as docs/extending.md runs plugins)."""
    (tmp_path / "poisoned_loss.py").write_text(PLUGIN)
    base = child_env()
    env = {**base, "PYTHONPATH": os.pathsep.join([str(tmp_path), base["PYTHONPATH"]]), **env}
    cmd = [sys.executable, "-c", DRIVER, "train", path, "--no-progress"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _one_error(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def _error_line(capsys) -> str:
    return _one_error(capsys.readouterr().err)


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    path, cfg = _project(tmp_path, poisoned=True)
    run = _train_poisoned(tmp_path, path, TBG_TEST_NAN_FROM="17")  # seen at the step-20 checkpoint, before it
    assert run.returncode == 2, run.stderr
    line = _one_error(run.stderr)
    assert line.startswith("tbg train: error: step 17: non-finite loss (bucket 0_0)"), line
    store = CheckpointStore(cfg.training.save_dir)
    latest = store.latest()
    assert latest.progress["step"] == 10 and not latest.progress["finished"]
    assert f"still {latest.path}, step 10" in line
    table, _ = full_table(cfg.training.save_dir, cfg.graph_dir)  # (latest)
    assert np.isfinite(table.numpy()).all()
    # metrics.jsonl holds the records up to the step-15 log (before the stop), strict JSON
    steps = [json.loads(line)["step"] for line in open(tmp_path / "save" / "metrics.jsonl")]
    assert steps == [5, 10, 15]

    # the loss fixed, the rerun resumes at step 10: the metrics are cut back, no step twice
    run = _train_poisoned(tmp_path, path)
    assert run.returncode == 0, run.stderr
    assert store.latest().progress["finished"]
    records = [json.loads(line) for line in open(tmp_path / "save" / "metrics.jsonl")]
    assert [r["step"] for r in records] == list(range(5, 61, 5))


def test_overflowing_learning_rate_names_the_table(tmp_path, capsys) -> None:
    path, cfg = _project(tmp_path, table_lr=1e39)
    assert main(["train", path, "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "step 1: non-finite values in table 'node' partition 0" in line, line
    assert "no checkpoint was committed" in line
    assert CheckpointStore(cfg.training.save_dir).latest() is None


def test_overflow_in_a_swapped_partition_is_caught_before_its_swap_file(tmp_path, capsys) -> None:
    """Two partitions: buckets swap tables out to files; the non-finite table is named before it is written."""
    path, cfg = _project(
        tmp_path, table_lr=1e39, partitions=2,
        **{"training.checkpoint_every_n": 1000, "training.train_log_every_n": 1000},
    )  # fmt: skip
    assert main(["train", path, "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "step 1: non-finite values in table 'node' partition" in line, line
    swap = tmp_path / "save" / "partitions"
    assert not swap.exists() or not any(name.endswith(".h5") for name in os.listdir(swap))


def test_non_finite_validation_loss_is_null_with_a_flag(tmp_path) -> None:
    path, cfg = _project(tmp_path, poisoned=True, **{"training.eval_log_every_n": 20, "training.report": True})
    run = _train_poisoned(tmp_path, path, TBG_TEST_NAN_IN_VALIDATION="1")
    assert run.returncode == 0, run.stderr
    text = open(tmp_path / "save" / "metrics.jsonl").read()
    assert "NaN" not in text and "Infinity" not in text
    records = [json.loads(line) for line in text.splitlines()]
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val] == [20, 40, 60]
    assert all(r["val_loss"] is None and r["nonfinite"] == ["val_loss"] for r in val)
    assert all(np.isfinite(r["loss"]) and "nonfinite" not in r for r in records if "loss" in r)
    assert (tmp_path / "save" / "report" / "index.md").exists()  # tbg report reads the null form


def _nan_checkpoint(cfg, what: str) -> str:
    """Commit, by hand through the checkpoint writer, a copy of the latest version with one NaN value."""
    store = CheckpointStore(cfg.training.save_dir)
    latest = store.latest()
    writer = store.begin(latest.version + 1)
    emb = latest.embeddings("node", 0).copy()
    rel = latest.relations()
    if what == "embeddings":
        emb[7, 3] = np.nan
    else:
        key = sorted(rel)[0]
        rel[key] = rel[key].copy()
        rel[key].reshape(-1)[0] = np.inf
    writer.write_embeddings("node", 0, emb, latest.optimizer_state("node", 0))
    writer.write_relations(rel)
    writer.write_file("config.yaml", latest.config_text())
    keep = ("epoch", "bucket_index", "position", "step", "edges_seen", "finished", "model_fingerprint",
            "graph_import_id")  # fmt: skip
    writer.commit({k: latest.progress[k] for k in keep if k in latest.progress})
    return os.path.join(store.latest().path, "embeddings", "node_0.h5" if what == "embeddings" else "")


@pytest.mark.parametrize("what", ["embeddings", "relations"])
def test_export_and_eval_refuse_non_finite_vectors(tmp_path, capsys, what) -> None:
    path, cfg = _project(tmp_path, **{"training.num_train_steps": 20})
    assert main(["train", path, "--no-progress"]) == 0
    bad = _nan_checkpoint(cfg, what)
    named = bad if what == "embeddings" else os.path.join(os.path.dirname(os.path.dirname(bad)), "relations.h5")
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["export", path, "--format", "npy", "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert named in line and "non-finite" in line, line
    assert not out.exists()
    assert main(["eval", path]) == 2
    line = _error_line(capsys)
    assert named in line and "non-finite" in line, line

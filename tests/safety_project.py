"""A tiny end-to-end project for the reliability tests: TSV sources, a YAML config (tests/builders.py), import +
train via the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from builders import child_env, write_config_file

from tbg.checkpoint import CheckpointStore
from tbg.cli import main


def write_project(root: Path, epochs: int = 2) -> str:
    rng = np.random.default_rng(0)
    for name, n in (("train", 600), ("valid", 60)):
        lines = [f"u{rng.integers(50)}\tfollows\tu{rng.integers(50)}" for _ in range(n)]
        (root / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    adagrad = {"adagrad": {"lr": 0.1}}
    return write_config_file(
        root / "c.yaml", root / "graph", types={"user": (None, 8, 2)}, relations=[("follows", "user", "user")],
        optimizer=adagrad,
        overrides={
            "runtime": {"seed": 0, "num_threads": 1, "hogwild_workers": 1},
            "training": {
                "save_dir": f"{root}/save", "num_epochs": epochs, "checkpoint_every_n": 5, "train_log_every_n": 5,
                "eval_log_every_n": 100000,
            },
            "model.loss": "logistic", "graph.id_mode": "names",
            "train_data": {
                "data_root": f"{root}/train.tsv", "per_replica_batch_size": 50, "in_batch_negatives": 10,
                "global_negatives": 10,
            },
            "validation_data": {"data_root": f"{root}/valid.tsv", "per_replica_batch_size": 50},
        },
    )  # fmt: skip


def trained_project(root: Path) -> Path:
    """A project dir with an imported graph and a finished 2-epoch run (P=2: swap files, linked shards)."""
    cfg = write_project(root)
    assert main(["import", cfg, "--no-progress"]) == 0
    assert main(["train", cfg, "--no-progress"]) == 0
    return root


def copy_project(trained: Path, root: Path) -> tuple[Path, str]:
    shutil.copytree(trained, root)
    for name in ("c.yaml",):  # paths in the config are absolute: point them at the copy
        (root / name).write_text((trained / name).read_text().replace(str(trained), str(root)))
    return root, str(root / "c.yaml")


def start_training(root: Path, cfg: str, commits: int) -> tuple[subprocess.Popen[str], int]:
    """`tbg train cfg` in a child process, returned once it has committed ``commits`` versions after the
    latest one in ``root/save`` (within 60 s), with that earlier version."""
    store = CheckpointStore(str(root / "save"))
    before = store.latest().version
    train = subprocess.Popen(
        [sys.executable, "-m", "tbg", "train", cfg, "--no-progress"], stderr=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        deadline = time.time() + 60
        while store.latest().version < before + commits:
            assert train.poll() is None and time.time() < deadline
            time.sleep(0.05)
    except BaseException:
        train.kill()
        train.wait()
        raise
    return train, before

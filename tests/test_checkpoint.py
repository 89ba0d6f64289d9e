"""Versioned checkpoints: atomic commit, latest pointer, pruning, crash leftovers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tbg.checkpoint import CheckpointStore, open_checkpoint
from tbg.errors import CheckpointError


def _commit(store: CheckpointStore, version: int) -> None:
    writer = store.begin(version)
    writer.write_embeddings("user", 0, np.full((3, 2), version, np.float32), {"sum": np.arange(3.0)})
    writer.write_relations({"rhs_operators.translation": np.zeros((1, 2), np.float32)})
    writer.write_file("config.yaml", "x: 1\n")
    writer.commit({"step": version})


def test_commit_and_read_back(tmp_path) -> None:
    store = CheckpointStore(str(tmp_path))
    assert store.latest() is None
    _commit(store, 7)
    ckpt = open_checkpoint(str(tmp_path))
    assert ckpt.version == 7 and ckpt.progress["step"] == 7
    assert ckpt.embeddings("user", 0).tolist() == [[7, 7]] * 3
    assert ckpt.optimizer_state("user", 0)["sum"].tolist() == [0, 1, 2]
    assert list(ckpt.relations()) == ["rhs_operators.translation"]
    assert open_checkpoint(ckpt.path).version == 7
    with pytest.raises(CheckpointError, match="no embeddings for entity type 'tweet'"):
        ckpt.embeddings("tweet", 0)


def test_max_to_keep_prunes_oldest(tmp_path) -> None:
    store = CheckpointStore(str(tmp_path), max_to_keep=2)
    for v in (1, 2, 3, 4):
        _commit(store, v)
    assert store.versions() == ["v0000000003", "v0000000004"]
    assert store.latest().version == 4


def test_uncommitted_write_is_invisible_and_cleaned(tmp_path) -> None:
    store = CheckpointStore(str(tmp_path))
    _commit(store, 1)
    crashed = store.begin(2)  # never committed: as if killed mid-write
    crashed.write_embeddings("user", 0, np.zeros((3, 2), np.float32))
    assert store.latest().version == 1
    _commit(store, 3)
    assert not any(n.startswith(".tmp-") for n in os.listdir(store.root))
    assert store.latest().version == 3


def test_missing_checkpoint_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no committed checkpoint; run `tbg train` first"):
        open_checkpoint(str(tmp_path))


def test_every_committed_file_is_on_disk_before_the_version_is_renamed_into_place(tmp_path, monkeypatch) -> None:
    """A crash right after a commit finds the version's files with their content (fsync before rename)."""
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    renamed_after: dict[str, list[str]] = {}

    def replace(src, dst) -> None:  # noqa: ANN001
        renamed_after[str(src)] = list(synced)
        if str(src) in synced:  # a file written as a temp, synced, then renamed: synced under its new name
            synced.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = CheckpointStore(str(tmp_path))
    _commit(store, 3)
    version_dir = open_checkpoint(str(tmp_path)).path
    tmp_dir = next(src for src in renamed_after if os.path.basename(src).startswith(".tmp-"))
    before_rename = set(renamed_after[tmp_dir])
    for root, _, files in os.walk(version_dir):
        for name in files:
            written_as = os.path.join(tmp_dir, os.path.relpath(os.path.join(root, name), version_dir))
            assert written_as in before_rename, written_as
    assert {tmp_dir, os.path.join(tmp_dir, "embeddings")} <= before_rename  # their entries too

"""Verified data (issue 10 item 2): a damaged, edited or missing file of a graph dir or a committed checkpoint is
one line naming it (exit 2); tbg never starts fresh or re-initialises a partition because something is
unreadable; graph dirs and checkpoints written without checksums (format 1) stay readable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pytest
from safety_project import copy_project, trained_project

from tbg.cli import main

LATEST_V = "v0000000006"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return trained_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> tuple[Path, str]:
    root, cfg = copy_project(trained, tmp_path / "p")
    # resuming must have something to do
    Path(cfg).write_text(Path(cfg).read_text().replace("num_epochs: 2", "num_epochs: 3"))
    return root, cfg


def _argv(command: str, cfg: str, root: Path) -> list[str]:
    return {
        "train": ["train", cfg, "--no-progress"],
        "eval": ["eval", cfg, "--split", "valid"],
        "export": ["export", cfg, "--format", "npy", "--out", str(root / "out")],
    }[command]


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in out, out
    err = out.splitlines()[-1]  # (train notes how it starts on a line of its own first)
    assert err.startswith(f"tbg {argv[0]}: error: ") and out.count(": error: ") == 1, out
    for needle in needles:
        assert needle in err, err
    return err


def _flip_data_byte(path: Path, dataset: str) -> None:
    """Overwrite one byte inside a dataset's stored data (the HDF5 header stays intact)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        offset = ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()
        size = ds.id.get_storage_size()
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 2)
        byte = fh.read(1)
        fh.seek(offset + size // 2)
        fh.write(bytes([byte[0] ^ 0x5A]))


@pytest.mark.parametrize("command", ["train", "eval", "export"])
def test_damaged_shard_is_one_line_naming_it(project, command, capsys) -> None:
    root, cfg = project
    shard = root / "save" / "checkpoints" / LATEST_V / "embeddings" / "user_1.h5"
    _flip_data_byte(shard, "embeddings")
    # (resume reads through the hard link the run left in partitions/: the same damaged inode)
    _one_line_error(capsys, _argv(command, cfg, root), "user_1.h5", "damaged")


@pytest.mark.parametrize("name", ["relations.h5", "state.pt", "config.yaml"])
def test_damaged_checkpoint_file_is_one_line_naming_it(project, name, capsys) -> None:
    root, cfg = project
    path = root / "save" / "checkpoints" / LATEST_V / name
    if name.endswith(".h5"):
        with h5py.File(path, "r") as f:
            first = next(iter(f.keys()))
        _flip_data_byte(path, first)
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x5A
        path.write_bytes(bytes(data))
    _one_line_error(capsys, _argv("train", cfg, root), name)


@pytest.mark.parametrize("name", ["embeddings/user_0.h5", "state.pt", "relations.h5"])
def test_deleted_checkpoint_file_is_an_error_not_a_fresh_start(project, name, capsys) -> None:
    root, cfg = project
    (root / "save" / "checkpoints" / LATEST_V / name).unlink()
    for command in ("train", "eval"):
        _one_line_error(capsys, _argv(command, cfg, root), name.split("/")[-1], "missing")
    assert (root / "save" / "checkpoints" / "latest").read_text().strip() == LATEST_V  # nothing was committed


@pytest.mark.parametrize("damage", ["dangling", "empty", "garbage", "deleted"])
def test_unreadable_latest_is_an_error_until_fresh(project, damage, capsys) -> None:
    root, cfg = project
    latest = root / "save" / "checkpoints" / "latest"
    if damage == "dangling":
        latest.write_text("v0000000099\n")
    elif damage == "empty":
        latest.write_text("")
    elif damage == "garbage":
        latest.write_bytes(b"\xff\xfe\x00junk")
    else:
        latest.unlink()
    for command in ("train", "eval", "export"):
        _one_line_error(capsys, _argv(command, cfg, root), str(latest))
    assert sorted(p.name for p in latest.parent.glob("v*"))[-1] == LATEST_V  # no version was overwritten
    assert main(["train", cfg, "--no-progress", "--fresh"]) == 0  # starting over is the user's explicit choice
    assert "fresh start" in capsys.readouterr().err


def test_damaged_or_missing_graph_file_is_one_line_naming_it(project, capsys) -> None:
    root, cfg = project
    bucket = root / "graph" / "train" / "edges_1_0.h5"
    _flip_data_byte(bucket, "lhs")
    _one_line_error(capsys, ["train", cfg, "--no-progress", "--fresh"], "edges_1_0.h5", "damaged")
    bucket.unlink()
    for command in ("train", "eval", "export"):
        _one_line_error(capsys, _argv(command, cfg, root), "edges_1_0.h5", "missing")


def test_damaged_entity_names_are_found_on_export(project, capsys) -> None:
    root, cfg = project
    path = root / "graph" / "entities" / "user.h5"
    with h5py.File(path, "r+") as f:  # same length, other names: only the checksum can tell
        names = f["names"].asstr()[:]
        f["names"][0] = names[1]
    _one_line_error(capsys, _argv("export", cfg, root), "user.h5", "names")


def test_edited_manifest_count_is_refused(project, capsys) -> None:
    root, cfg = project
    path = root / "graph" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["train"]["buckets"]["0_0"] += 10
    path.write_text(json.dumps(manifest))
    _one_line_error(capsys, _argv("train", cfg, root), "manifest.json", "checksum")
    # without the checksum (as a format-1 manifest), the bucket file's own length still disagrees
    del manifest["checksum"]
    path.write_text(json.dumps(manifest))
    _one_line_error(capsys, ["train", cfg, "--no-progress", "--fresh"], "edges_0_0.h5", "the manifest says")


def test_format_1_graph_and_checkpoint_stay_readable(project, capsys) -> None:
    """Strip what format 2 added (checksums, file lists) from the JSON files: everything still works."""
    root, cfg = project
    for path in [root / "graph" / "manifest.json", *sorted((root / "save" / "checkpoints").glob("v*/progress.json"))]:
        data = json.loads(path.read_text())
        data.pop("checksum")
        data.pop("files")
        data["format_version"] = 1
        path.write_text(json.dumps(data))
    assert main(_argv("eval", cfg, root)) == 0
    assert main(_argv("export", cfg, root)) == 0
    assert main(_argv("train", cfg, root)) == 0
    assert "resumed from" in capsys.readouterr().err
    latest = root / "save" / "checkpoints" / (root / "save" / "checkpoints" / "latest").read_text().strip()
    assert json.loads((latest / "progress.json").read_text())["format_version"] == 2
    assert os.path.isfile(latest / "embeddings" / "user_0.h5")

"""Every bad input and bad environment is one `tbg <cmd>: error:` line naming the file/key, exit 2, no traceback,
and nothing half-written (issue 10 item 6).  Everything runs through ``tbg.cli.main`` on one tiny graph."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tbg.cli import main

CONFIG = """\
model:
  embeddings:
    tables:
      - {{name: user, embedding_dim: 4, optimizer: {{sgd: {{lr: 0.1}}}}}}
      - {{name: tweet, embedding_dim: 4, optimizer: {{sgd: {{lr: 0.1}}}}}}
  relations:
    - {{name: fav, lhs: user, rhs: tweet}}
    - {{name: reply, lhs: user, rhs: tweet}}
  translation_optimizer: {{sgd: {{lr: 0.1}}}}
train_data: {{data_root: {root}/train.tsv, per_replica_batch_size: 10}}
validation_data: {{data_root: {root}/valid.tsv}}
graph: {{dir: {graph}, id_mode: names}}
training: {{save_dir: {save}, num_train_steps: 4, checkpoint_every_n: 2, train_log_every_n: 2}}
runtime: {{hogwild_workers: 1, num_threads: 1}}
"""
V2 = "save/checkpoints/v0000000002"


def write_config(root: Path, graph: str = "graph", save: str = "save", name: str = "cfg.yaml") -> str:
    path = root / name
    path.write_text(CONFIG.format(root=root, graph=root / graph, save=root / save))
    return str(path)


def cli(capsys, *argv: str) -> tuple[int, list[str]]:
    rc = main([*argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, [line for line in err.splitlines() if line.strip()]


def assert_error(rc: int, lines: list[str], command: str, *mentions: str) -> None:
    """Exit 2 and one error line (``tbg train`` may print its one start note first) naming ``mentions``."""
    notes = [line for line in lines[:-1] if command == "train" and line.startswith("tbg train: fresh start")]
    assert rc == 2 and lines and len(lines) == len(notes) + 1, lines
    assert lines[-1].startswith(f"tbg {command}: error: "), lines
    for text in mentions:
        assert text in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Sources, an imported graph and a run with two committed checkpoints (v1 at step 2, v2 at step 4)."""
    root = tmp_path_factory.mktemp("base")
    rows = [f"u{i % 8}\t{('fav', 'reply')[i % 2]}\tt{i % 6}" for i in range(40)]
    (root / "train.tsv").write_text("\n".join(rows) + "\n")
    (root / "valid.tsv").write_text("\n".join(rows[:10]) + "\n")
    cfg = write_config(root)
    assert main(["import", cfg, "--no-progress"]) == 0
    assert main(["train", cfg, "--no-progress"]) == 0
    return root


@pytest.fixture()
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run (configs name absolute paths, so it is rewritten for the copy)."""
    root = tmp_path / "run"
    shutil.copytree(trained, root)
    write_config(root)
    return root


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _splice(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


# --------------------------------------------------------------------------------------------- config files


def test_config_path_that_is_a_directory(tmp_path, capsys) -> None:
    (tmp_path / "c.yaml").mkdir()
    rc, lines = cli(capsys, "import", str(tmp_path / "c.yaml"))
    assert_error(rc, lines, "import", "c.yaml: is a directory")


def test_config_that_is_not_utf8(tmp_path, capsys) -> None:
    (tmp_path / "c.yaml").write_bytes(b"training: {}\nmodel: \xff\xfe\n")
    rc, lines = cli(capsys, "train", str(tmp_path / "c.yaml"))
    assert_error(rc, lines, "train", "c.yaml: line 2: not UTF-8")


def test_line_break_in_a_config_name_stays_on_one_line(tmp_path, capsys) -> None:
    text = CONFIG.format(root=tmp_path, graph=tmp_path / "g", save=tmp_path / "s")
    (tmp_path / "c.yaml").write_text(text + '"ba\\nd": 1\n')
    rc, lines = cli(capsys, "import", str(tmp_path / "c.yaml"))
    assert_error(rc, lines, "import", "ba\\nd: unknown key")


# --------------------------------------------------------------------------------------------- damaged state

MANIFEST = "graph/manifest.json"
DAMAGE = {
    # name: (file, damage, command, expected in the error line)
    "manifest_not_utf8": (MANIFEST, lambda p: _splice(p, b"id_mode", b"id_\xffode"), "train", "manifest.json"),
    "manifest_no_id_mode": (
        MANIFEST, lambda p: _edit_json(p, lambda m: m.pop("id_mode")), "export", "missing key 'id_mode'"),
    "manifest_no_buckets": (
        MANIFEST, lambda p: _edit_json(p, lambda m: m["splits"]["train"].pop("buckets")), "train",
        "missing key 'splits.train.buckets'"),
    "manifest_no_count": (
        MANIFEST, lambda p: _edit_json(p, lambda m: m["entity_types"]["user"].pop("count")), "eval",
        "missing key 'entity_types.user.count'"),
    "manifest_not_an_object": (MANIFEST, lambda p: p.write_text("[1, 2]"), "export", "expected an object"),
    "state_truncated": (f"{V2}/state.pt", lambda p: p.write_bytes(p.read_bytes()[:100]), "train",
                        "state.pt: unreadable trainer state"),
    "state_garbage": (f"{V2}/state.pt", lambda p: p.write_bytes(b"garbage\n"), "train",
                      "state.pt: unreadable trainer state"),
    "latest_not_utf8": ("save/checkpoints/latest", lambda p: p.write_bytes(b"\xff\xfe"), "train",
                        "checkpoints/latest: unreadable"),
    "latest_not_utf8_export": ("save/checkpoints/latest", lambda p: p.write_bytes(b"\xc8\xff"), "export",
                               "checkpoints/latest: unreadable"),
    "progress_not_utf8": (f"{V2}/progress.json", lambda p: _splice(p, b"step", b"st\xffp"), "eval",
                          "progress.json: unreadable"),
    "progress_no_step": (f"{V2}/progress.json", lambda p: _edit_json(p, lambda m: m.pop("step")), "train",
                         "progress.json: missing key 'step'"),
    "progress_no_version": (f"{V2}/progress.json", lambda p: _edit_json(p, lambda m: m.pop("version")), "export",
                            "progress.json: missing key 'version'"),
    "progress_bad_position": (f"{V2}/progress.json", lambda p: _edit_json(p, lambda m: m.update(position="x")),
                              "train", "progress.json: position: expected an integer"),
    "ckpt_config_not_utf8": (f"{V2}/config.yaml", lambda p: _splice(p, b"model", b"mod\xffl"), "train",
                             "config.yaml: unreadable: not UTF-8"),
    "ckpt_config_not_utf8_export": (f"{V2}/config.yaml", lambda p: _splice(p, b"model", b"mod\xffl"), "export",
                                    "config.yaml: unreadable: not UTF-8"),
    "ckpt_config_bad_yaml": (f"{V2}/config.yaml", lambda p: p.write_text("model: [\n"), "eval",
                             "config.yaml: unreadable"),
    "ckpt_config_bad_shape": (f"{V2}/config.yaml", lambda p: p.write_text("model: {embeddings: 3}\n"), "export",
                              "config.yaml: model.embeddings: expected a mapping"),
}  # fmt: skip
ARGS = {"train": ["--no-progress"], "export": ["--format", "tsv", "--out", "OUT"], "eval": ["--split", "valid"]}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_state_is_one_line(run, capsys, case) -> None:
    rel, damage, command, expect = DAMAGE[case]
    damage(run / rel)
    if command == "train":  # train further than the committed run, so it must read the checkpoint
        cfg = run / "cfg.yaml"
        cfg.write_text(cfg.read_text().replace("num_train_steps: 4", "num_train_steps: 6"))
    args = [a.replace("OUT", str(run / "out")) for a in ARGS[command]]
    rc, lines = cli(capsys, command, str(run / "cfg.yaml"), *args)
    assert_error(rc, lines, command, expect)
    assert not (run / "out").exists()


# --------------------------------------------------------------------------------------------- paths


def test_export_out_below_a_file(run, capsys) -> None:
    (run / "afile").write_text("x")
    rc, lines = cli(capsys, "export", str(run / "cfg.yaml"), "--format", "npy", "--out", str(run / "afile/sub/out"))
    assert_error(rc, lines, "export", f"{run / 'afile'} is a file, not a directory")


def test_graph_dir_below_a_file(run, capsys) -> None:
    (run / "afile").write_text("x")
    cfg = write_config(run, graph="afile/graph", name="c2.yaml")
    rc, lines = cli(capsys, "import", cfg, "--no-progress")
    assert_error(rc, lines, "import", str(run / "afile"), "is a file")


def test_save_dir_below_a_file(run, capsys) -> None:
    (run / "afile").write_text("x")
    cfg = write_config(run, save="afile/save", name="c2.yaml")
    rc, lines = cli(capsys, "train", cfg, "--no-progress")
    assert_error(rc, lines, "train", str(run / "afile"), "is a file")


# --------------------------------------------------------------------------------------------- disk full, permissions


def _mount(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


@pytest.fixture(params=["enospc", "erofs", "eacces"])
def bad_disk(request, run):
    """``run/fs``: a full disk or a read-only one (tmpfs, needs root), or a dir without write permission
    (needs a non-root user: root ignores permissions).  Yields (dir, what the OS says)."""
    fs = run / "fs"
    kind = request.param
    if kind == "eacces":
        if os.geteuid() == 0:
            pytest.skip("root ignores file permissions")
        fs.mkdir()
        fs.chmod(0o555)
        yield fs, "Permission denied"
        fs.chmod(0o755)
        return
    if os.geteuid() != 0 or not _mount(fs, "size=8k" if kind == "enospc" else "size=64k,ro"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield fs, "No space left on device" if kind == "enospc" else "Read-only file system"
    finally:
        subprocess.run(["umount", str(fs)], capture_output=True)


def _leftovers(fs: Path) -> list[str]:
    return sorted(str(p.relative_to(fs)) for p in fs.rglob("*"))


def test_import_on_a_bad_disk(run, bad_disk, capsys) -> None:
    fs, reason = bad_disk
    cfg = write_config(run, graph="fs/graph", name="c2.yaml")
    rc, lines = cli(capsys, "import", cfg, "--no-progress")
    assert_error(rc, lines, "import", str(fs), reason, "nothing imported")
    assert _leftovers(fs) == []


def test_train_on_a_bad_disk(run, bad_disk, capsys) -> None:
    fs, reason = bad_disk
    cfg = write_config(run, save="fs/save", name="c2.yaml")
    rc, lines = cli(capsys, "train", cfg, "--no-progress")
    assert_error(rc, lines, "train", str(fs), reason)
    assert not [p for p in _leftovers(fs) if p.startswith("save/checkpoints/") or ".tmp-" in p], _leftovers(fs)


def test_export_on_a_bad_disk(run, bad_disk, capsys) -> None:
    fs, reason = bad_disk
    rc, lines = cli(capsys, "export", str(run / "cfg.yaml"), "--format", "tsv", "--out", str(fs / "out"))
    assert_error(rc, lines, "export", str(fs), reason, "nothing exported")
    assert _leftovers(fs) == []

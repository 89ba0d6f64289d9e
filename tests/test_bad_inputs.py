"""Every bad input and bad environment is one `tbg <cmd>: error:` line naming the file/key, exit 2, no traceback,
and nothing half-written (issue 10 item 6).  Everything runs through ``tbg.cli.main`` on one tiny graph."""

from __future__ import annotations

import gc
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
    """Edit a committed JSON file by hand (its own checksum dropped, as in a file written without one)."""
    data = json.loads(path.read_text())
    data.pop("checksum", None)
    edit(data)
    path.write_text(json.dumps(data))


def _unlisted(damage):
    """``damage`` after removing the checkpoint's file list and checksum (a checkpoint written without them), so
    the reader of the damaged file itself must notice, not the size/SHA-256 check."""

    def apply(path: Path) -> None:
        _edit_json(path.parent / "progress.json", lambda m: m.pop("files", None))
        damage(path)

    return apply


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
    "manifest_not_an_object": (MANIFEST, lambda p: p.write_text("[1, 2]"), "export", "manifest.json: unreadable"),
    "state_truncated": (f"{V2}/state.pt", lambda p: p.write_bytes(p.read_bytes()[:100]), "train", "state.pt: "),
    "state_truncated_unlisted": (f"{V2}/state.pt", _unlisted(lambda p: p.write_bytes(p.read_bytes()[:100])),
                                 "train", "state.pt: unreadable trainer state"),
    "state_garbage_unlisted": (f"{V2}/state.pt", _unlisted(lambda p: p.write_bytes(b"garbage\n")), "train",
                               "state.pt: unreadable trainer state"),
    "latest_not_utf8": ("save/checkpoints/latest", lambda p: p.write_bytes(b"\xff\xfe"), "train",
                        "checkpoints/latest: damaged"),
    "latest_not_utf8_export": ("save/checkpoints/latest", lambda p: p.write_bytes(b"\xc8\xff"), "export",
                               "checkpoints/latest: damaged"),
    "ckpt_config_listed": (f"{V2}/config.yaml", lambda p: p.write_text("model: {}\n"), "export", "config.yaml: "),
    "progress_not_utf8": (f"{V2}/progress.json", lambda p: _splice(p, b"step", b"st\xffp"), "eval",
                          "progress.json: unreadable"),
    "progress_no_step": (f"{V2}/progress.json", lambda p: _edit_json(p, lambda m: m.pop("step")), "train",
                         "progress.json: missing key 'step'"),
    "progress_no_version": (f"{V2}/progress.json", lambda p: _edit_json(p, lambda m: m.pop("version")), "export",
                            "progress.json: no valid 'version'"),
    "progress_bad_position": (f"{V2}/progress.json", lambda p: _edit_json(p, lambda m: m.update(position="x")),
                              "train", "progress.json: position: expected an integer"),
    "ckpt_config_not_utf8": (f"{V2}/config.yaml", _unlisted(lambda p: _splice(p, b"model", b"mod\xffl")), "train",
                             "config.yaml: unreadable: not UTF-8"),
    "ckpt_config_not_utf8_export": (f"{V2}/config.yaml", _unlisted(lambda p: _splice(p, b"model", b"mod\xffl")),
                                    "export",
                                    "config.yaml: unreadable: not UTF-8"),
    "ckpt_config_bad_yaml": (f"{V2}/config.yaml", _unlisted(lambda p: p.write_text("model: [\n")), "eval",
                             "config.yaml: unreadable"),
    "ckpt_config_bad_shape": (f"{V2}/config.yaml", _unlisted(lambda p: p.write_text("model: {embeddings: 3}\n")),
                              "export",
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
        fs.mkdir()
        fs.chmod(0o555)
        try:
            if _writable(fs):
                pytest.skip("file permissions are not enforced for this user (root)")
            yield fs, "Permission denied"
        finally:
            fs.chmod(0o755)
        return
    if os.geteuid() != 0 or not _mount(fs, "size=8k" if kind == "enospc" else "size=64k,ro"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield fs, "No space left on device" if kind == "enospc" else "Read-only file system"
    finally:
        subprocess.run(["umount", str(fs)], capture_output=True)


def _writable(directory: Path) -> bool:
    try:
        (directory / "probe").touch()
    except PermissionError:
        return False
    (directory / "probe").unlink()
    return True


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


def _unmount(fs: Path) -> None:
    subprocess.run(["umount", str(fs)], capture_output=True)


@pytest.mark.parametrize("command", ["import", "train"])
def test_a_disk_filling_up_inside_hdf5_files_is_one_line(run, command, capsys) -> None:
    """tmpfs sizes that run out in the middle of HDF5 files (edge buckets, shards, relations.h5, evicted
    partitions) and of state.pt: one line naming the file, no HDF5 "Exception ignored" noise even after a
    garbage collection, nothing half-written, and a rerun with room finishes."""
    if os.geteuid() != 0 or not _mount(run / "probe", "size=8k"):
        pytest.skip("needs root to mount a small tmpfs")
    _unmount(run / "probe")
    fs = run / "fs"
    what = "graph" if command == "import" else "save"
    cfg = write_config(run, **{what: f"fs/{what}"}, name="c2.yaml")
    need = sum(p.stat().st_size + 4096 for p in (run / what).rglob("*"))
    argv = [command, cfg, "--no-progress"]
    failures = 0
    for fraction in (0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95):
        assert _mount(fs, f"size={max(4, int(need * fraction) // 1024)}k")
        try:
            rc = main(argv)
            gc.collect()
            err = capsys.readouterr().err
            assert "Traceback" not in err and "Exception ignored" not in err, err
            lines = [line for line in err.splitlines() if line.strip()]
            if rc != 0:
                failures += 1
                assert_error(rc, lines, command, str(fs), "No space left on device")
                assert not [p for p in _leftovers(fs) if ".tmp-" in p or p == "graph"], _leftovers(fs)
                subprocess.run(["mount", "-o", "remount,size=64m", str(fs)], check=True, capture_output=True)
                assert main(argv) == 0
                capsys.readouterr()
        finally:
            _unmount(fs)
    assert failures >= 3


# --------------------------------------------------------------------------------------------- source files

SOURCE_CONFIG = """\
model:
  embeddings:
    tables:
      - {{name: user, embedding_dim: 4, optimizer: {{sgd: {{lr: 0.1}}}}}}
      - {{name: tweet, embedding_dim: 4, optimizer: {{sgd: {{lr: 0.1}}}}}}
  relations: {relations}
  translation_optimizer: {{sgd: {{lr: 0.1}}}}
train_data: {{data_root: {root}/train.{ext}}}
validation_data: {{data_root: {root}/valid.{ext}}}
graph: {{dir: {root}/graph, id_mode: names{graph}}}
"""
TWO_RELATIONS = "[{name: fav, lhs: user, rhs: tweet}, {name: reply, lhs: user, rhs: tweet}]"
ONE_RELATION = "[{name: fav, lhs: user, rhs: tweet}]"


def import_sources(
    root: Path, capsys, train: str, valid: str = "u1\tfav\tt1\n", graph: str = "", relations: str = TWO_RELATIONS,
    ext: str = "tsv",
) -> tuple[int, list[str]]:  # fmt: skip
    (root / f"train.{ext}").write_text(train)
    (root / f"valid.{ext}").write_text(valid)
    cfg = root / "c.yaml"
    cfg.write_text(SOURCE_CONFIG.format(root=root, graph=graph, relations=relations, ext=ext))
    return cli(capsys, "import", str(cfg), "--no-progress")


def split_edges(root: Path) -> dict[str, int]:
    manifest = json.loads((root / "graph" / "manifest.json").read_text())
    return {name: split["num_edges"] for name, split in manifest["splits"].items()}


def test_out_of_range_column_names_only_the_missing_one(tmp_path, capsys) -> None:
    rc, lines = import_sources(tmp_path, capsys, "u1\tfav\tt1\n", graph=", columns: {lhs: 0, rel: 1, rhs: 5}")
    assert_error(rc, lines, "import", "train.tsv: column 'rhs' at position 5 out of range (the file has 3 columns)")
    assert "'lhs'" not in lines[-1] and "'rel'" not in lines[-1]


def test_rel_may_be_omitted_with_one_relation(tmp_path, capsys) -> None:
    rows = "u1\tt1\nu2\tt2\nu1\tt2\n"
    rc, lines = import_sources(tmp_path, capsys, rows, "u3\tt1\n", ", columns: {lhs: 0, rhs: 1}", ONE_RELATION)
    assert rc == 0 and lines == [], lines
    assert split_edges(tmp_path) == {"train": 3, "valid": 1}


def test_rel_column_is_still_checked_when_present(tmp_path, capsys) -> None:
    header = "lhs\trel\trhs\n"
    rows, valid = header + "u1\tfav\tt1\nu2\tbad\tt2\n", header + "u1\tfav\tt1\n"
    rc, lines = import_sources(tmp_path, capsys, rows, valid, ", header: true", ONE_RELATION)
    assert_error(rc, lines, "import", "train.tsv row 2: column 'rel': unknown relation 'bad'")


def test_rel_is_needed_with_several_relations(tmp_path, capsys) -> None:
    rc, lines = import_sources(tmp_path, capsys, "u1\tt1\n", "u1\tt1\n", ", columns: {lhs: 0, rhs: 1}")
    assert_error(rc, lines, "import", "train.tsv: column 'rel' given by name")


@pytest.mark.parametrize("ext", ["tsv", "csv"])
@pytest.mark.parametrize("blank", ["", "\n", "\n\r\n\n"])
def test_empty_and_blank_files_are_empty_splits(tmp_path, capsys, ext, blank) -> None:
    """A file without rows is an empty split whether it has zero bytes or only line breaks (blank lines are
    never rows); ``tbg train`` then refuses a graph without training edges."""
    sep = "\t" if ext == "tsv" else ","
    rc, lines = import_sources(tmp_path, capsys, sep.join(["u1", "fav", "t1"]) + "\n", blank, ext=ext)
    assert rc == 0 and lines == [], lines
    assert split_edges(tmp_path) == {"train": 1, "valid": 0}


@pytest.mark.parametrize("row", ["\tfav\tt2", "u2\tfav\t"])
def test_empty_name_is_an_error(tmp_path, capsys, row) -> None:
    role = "lhs" if row.startswith("\t") else "rhs"
    rc, lines = import_sources(tmp_path, capsys, f"u1\tfav\tt1\n{row}\n")
    assert_error(rc, lines, "import", f"train.tsv row 2: column '{role}': empty entity name")
    assert not (tmp_path / "graph").exists()


@pytest.mark.parametrize(("weight", "problem"), [
    ("nan", "not finite"), ("inf", "not finite"), ("-inf", "not finite"), ("-0.5", "negative"), ("", "cannot parse"),
    ("x", "cannot parse"),
])  # fmt: skip
def test_weights_must_be_finite_and_non_negative(tmp_path, capsys, weight, problem) -> None:
    graph = ", columns: {lhs: 0, rel: 1, rhs: 2, weight: 3}"
    rc, lines = import_sources(tmp_path, capsys, f"u1\tfav\tt1\t1\nu2\tfav\tt2\t{weight}\n", "u1\tfav\tt1\t0\n", graph)
    assert_error(rc, lines, "import", "train.tsv row 2: column 'weight'", problem)


def test_zero_weight_is_accepted(tmp_path, capsys) -> None:
    graph = ", columns: {lhs: 0, rel: 1, rhs: 2, weight: 3}"
    rc, lines = import_sources(tmp_path, capsys, "u1\tfav\tt1\t0\nu2\tfav\tt2\t2.5\n", "u1\tfav\tt1\t0\n", graph)
    assert rc == 0 and split_edges(tmp_path)["train"] == 2


# --------------------------------------------------------------------------------------------- resume


def _resume_with(run: Path, old: str, new: str) -> str:
    cfg = run / "cfg.yaml"
    text = cfg.read_text().replace("num_train_steps: 4", "num_train_steps: 6, num_epochs: 2")
    assert old in text
    cfg.write_text(text.replace(old, new, 1))
    return str(cfg)


@pytest.mark.parametrize(("old", "new", "key"), [
    ("{sgd: {lr: 0.1}}}", "{sgd: {lr: 0.2}}}", "model.embeddings.tables[0].optimizer"),
    ("translation_optimizer: {sgd: {lr: 0.1}}", "translation_optimizer: {adam: {lr: 0.1}}",
     "model.translation_optimizer"),
])  # fmt: skip
def test_optimizer_change_on_resume_needs_the_flag(run, capsys, old, new, key) -> None:
    cfg = _resume_with(run, old, new)
    rc, lines = cli(capsys, "train", cfg, "--no-progress")
    assert_error(rc, lines, "train", f"{key}: ", "--allow-optimizer-change")
    rc, lines = cli(capsys, "train", cfg, "--no-progress", "--allow-optimizer-change")
    assert rc == 0 and f"at step 4 with a changed {key}" in lines[0], lines
    progress = json.loads((run / "save/checkpoints/v0000000003/progress.json").read_text())
    assert progress["step"] == 6
    rc, lines = cli(capsys, "train", _resume_with(run, "num_train_steps: 6", "num_train_steps: 8"), "--no-progress")
    assert rc == 0, lines  # the new optimizer is now the checkpoint's own


def test_unchanged_optimizer_resumes(run, capsys) -> None:
    rc, lines = cli(capsys, "train", _resume_with(run, "num_epochs: 2", "num_epochs: 2"), "--no-progress")
    assert rc == 0 and "resumed from" in lines[0] and "with a changed" not in lines[0], lines

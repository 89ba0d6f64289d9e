"""One writer per directory (issue 10 items 1 and 5): a second train/import/export gets one line naming the
holder and exit 2; a killed holder leaves no stale lock; SIGTERM stops cleanly; no temp leftovers remain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from builders import child_env
from safety_project import copy_project, start_training, trained_project

from tbg.checkpoint import CheckpointStore
from tbg.cli import main
from tbg.errors import LockedError
from tbg.importer import import_graph
from tbg.locking import exclusive, lock_path

LEFTOVER_MARKS = (".tmp-", ".old-")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return trained_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> tuple[Path, str]:
    return copy_project(trained, tmp_path / "p")


def _hold(directory: Path, command: str) -> subprocess.Popen:
    """Another process holding ``directory``'s writer lock until killed."""
    code = (
        "import sys, time; from tbg.locking import exclusive; exclusive(sys.argv[1], sys.argv[2]).acquire();"
        " print('held', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory), command], stdout=subprocess.PIPE, env=child_env()
    )
    assert proc.stdout.readline().strip() == b"held"
    return proc


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if any(m in p.name for m in LEFTOVER_MARKS))


COMMANDS = {
    "train": ("save", ["--no-progress"]),
    "import": ("graph", ["--overwrite", "--no-progress"]),
    "export": ("out", ["--format", "npy", "--out", "{root}/out"]),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_second_writer_is_refused_until_the_holder_dies(project, command, capsys) -> None:
    root, cfg = project
    target, extra = COMMANDS[command]
    argv = [command, cfg, *(a.format(root=root) for a in extra)]
    if command == "train":
        Path(cfg).write_text(Path(cfg).read_text().replace("num_epochs: 2", "num_epochs: 3"))
    holder = _hold(root / target, f"tbg {command} other")
    try:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"pid {holder.pid} on " in err and str(root / target) in err, err
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: the command runs now (and cleans the lock file up)
    assert main(argv) == 0
    assert not os.path.exists(lock_path(str(root / target)))


def test_python_api_takes_the_same_lock(project) -> None:
    root, cfg = project
    from tbg.config import load_config

    with exclusive(str(root / "graph"), "tbg import"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()} on "):
            import_graph(load_config(cfg), overwrite=True, progress=False)


def test_two_real_trains_then_sigterm_stops_cleanly(project, capsys) -> None:
    root, cfg = project
    Path(cfg).write_text(Path(cfg).read_text().replace("num_epochs: 2", "num_epochs: 100000"))
    first, before = start_training(root, cfg, commits=2)  # it resumed and committed
    try:
        capsys.readouterr()
        assert main(["train", cfg, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"pid {first.pid} on " in err, err
        # readers take no lock and see only committed versions while the run commits new ones
        for _ in range(3):
            assert main(["eval", cfg, "--split", "valid", "--json-out", str(root / "eval.json")]) == 0
            assert main(["export", cfg, "--format", "npy", "--out", str(root / "out"), "--overwrite"]) == 0
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 143
    assert first_err.strip().splitlines()[-1] == "tbg train: terminated (SIGTERM); committed state kept"
    assert "Traceback" not in first_err
    latest = CheckpointStore(str(root / "save")).latest()
    assert latest.version >= before + 2 and latest.progress["step"] % 5 == 0
    assert not os.path.exists(lock_path(str(root / "save")))
    assert _leftovers(root) == []


def test_no_leftovers_after_resume_overwrite_and_a_killed_run(project) -> None:
    root, cfg = project
    save, ckpts = root / "save", root / "save" / "checkpoints"
    # what kill -9 at various moments leaves: temp build dirs, dirs moved aside, temp files of commits/evictions
    for d in ("graph.tmp-999-dead", "graph.old-999-dead", "out.tmp-dead", "out.old-dead", "save/checkpoints/.tmp-v9"):
        (root / d).mkdir()
        (root / d / "x").write_text("partial")
    for f in (
        "checkpoints/latest.tmp-dead",
        "partitions/user_0.h5.tmp-link",
        "partitions/user_1.h5.tmp-abcd",
        "metrics.jsonl.tmp-dead",
    ):
        (save / f).parent.mkdir(exist_ok=True)  # (a run whose partitions all stayed resident wrote no swap file)
        (save / f).write_text("partial")
    latest = (ckpts / "latest").read_text()
    Path(cfg).write_text(Path(cfg).read_text().replace("num_epochs: 2", "num_epochs: 3"))
    assert main(["train", cfg, "--no-progress"]) == 0  # a resume (it used to leave partitions/*.h5.tmp-link)
    assert (ckpts / "latest").read_text() != latest
    (root / "out").write_text("a file in the way")
    assert main(["export", cfg, "--format", "tsv", "--out", str(root / "out"), "--overwrite"]) == 0
    assert json.loads((root / "out" / "export.json").read_text())["format"] == "tsv"
    assert main(["import", cfg, "--overwrite", "--no-progress"]) == 0
    (root / "graph2").write_text("a file in the way")
    Path(cfg).write_text(Path(cfg).read_text().replace(f"{root}/graph", f"{root}/graph2"))
    assert main(["import", cfg, "--overwrite", "--no-progress"]) == 0  # --overwrite over a file
    assert _leftovers(root) == []
    assert sorted(p.name for p in root.glob("*.lock")) == []

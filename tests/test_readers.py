"""Readers never see a half-written or vanishing state (issue 10 item 1): train, eval, export and ``tbg.load``
read the graph dir under a shared lock, so ``tbg import --overwrite`` is refused while they run (and they are
refused while an import writes it); a reader pins the checkpoint version it reads, so pruning and ``--fresh``
leave it alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from builders import child_env
from safety_project import copy_project, start_training, trained_project

import tbg
from tbg.cli import main
from tbg.locking import lock_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return trained_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> tuple[Path, str]:
    return copy_project(trained, tmp_path / "p")


def _set(cfg: str, **training: object) -> None:
    """Set keys of the config file's ``training`` section."""
    data = yaml.safe_load(Path(cfg).read_text())
    data["training"].update(training)
    Path(cfg).write_text(yaml.safe_dump(data, sort_keys=False))


def _one_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"tbg {command}: error: ") and "Traceback" not in "".join(err), err
    return err[-1]


def test_import_overwrite_is_refused_while_a_real_train_reads_the_graph(project, capsys) -> None:
    root, cfg = project
    _set(cfg, num_epochs=100000)
    train, _ = start_training(root, cfg, commits=1)  # it resumed and committed
    try:
        capsys.readouterr()
        assert main(["import", cfg, "--overwrite", "--no-progress"]) == 2
        line = _one_error(capsys, "import")
        assert str(root / "graph") in line and f"pid {train.pid} on " in line and "reading it" in line, line
        assert "`tbg train " in line, line
        train.send_signal(signal.SIGTERM)
        train.communicate(timeout=60)
    finally:
        train.kill()
    assert train.returncode == 143
    # the reader is gone: the import runs, and the last reader's lock file went with it
    assert main(["import", cfg, "--overwrite", "--no-progress"]) == 0
    assert not os.path.exists(lock_path(str(root / "graph")))


def _hold_import(graph: Path) -> subprocess.Popen:
    """Another process writing ``graph`` (holding the importer's lock) until killed."""
    code = (
        "import sys, time; from tbg.locking import exclusive; lock = exclusive(sys.argv[1], 'tbg import c.yaml');"
        " lock.acquire(); print('held', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(graph)], stdout=subprocess.PIPE, env=child_env())
    assert proc.stdout.readline().strip() == b"held"
    return proc


@pytest.mark.parametrize("command", ["train", "eval", "export"])
def test_readers_are_refused_while_an_import_writes_the_graph(project, command, capsys) -> None:
    root, cfg = project
    argv = {
        "train": ["train", cfg, "--no-progress"],
        "eval": ["eval", cfg, "--split", "valid", "--json-out", str(root / "eval.json")],
        "export": ["export", cfg, "--format", "npy", "--out", str(root / "out")],
    }[command]
    _set(cfg, num_epochs=3)
    latest = (root / "save" / "checkpoints" / "latest").read_text()
    holder = _hold_import(root / "graph")
    try:
        capsys.readouterr()
        assert main(argv) == 2
        line = _one_error(capsys, command)
        assert f"{root / 'graph'}: in use by `tbg import c.yaml` (pid {holder.pid} on " in line, line
    finally:
        holder.kill()
        holder.wait()
    assert (root / "save" / "checkpoints" / "latest").read_text() == latest  # nothing was trained
    assert not (root / "out").exists()
    assert main(argv) == 0


def test_a_version_being_read_is_not_pruned_or_deleted(project, capsys) -> None:
    root, cfg = project
    _set(cfg, num_epochs=3, checkpoint_max_to_keep=1)
    ckpts = root / "save" / "checkpoints"
    model = tbg.load(str(root / "save"), graph_dir=str(root / "graph"))  # (its config.yaml names the original)
    read = model.checkpoint.name
    vectors = model.vectors("user").copy()
    capsys.readouterr()
    # the graph is being read: no import may replace it, and --fresh may not delete the version
    assert main(["import", cfg, "--overwrite", "--no-progress"]) == 2
    assert f"pid {os.getpid()} on " in _one_error(capsys, "import")
    assert main(["train", cfg, "--no-progress", "--fresh"]) == 2
    line = _one_error(capsys, "train")
    assert f"{ckpts / read}: being read by " in line and f"pid {os.getpid()} on " in line, line
    assert (ckpts / read / "progress.json").is_file()
    # training on commits and prunes (max_to_keep 1), but keeps the version being read, whole
    assert main(["train", cfg, "--no-progress"]) == 0
    latest = (ckpts / "latest").read_text().strip()
    assert sorted(p.name for p in ckpts.glob("v*")) == sorted({read, latest}) and latest != read
    assert main(["export", cfg, "--format", "npy", "--out", str(root / "out"), "--checkpoint", str(ckpts / read)]) == 0
    with tbg.load(str(ckpts / read), graph_dir=str(root / "graph")) as again:
        assert (again.vectors("user") == vectors).all()
    model.close()
    # the reader is done: the next commit prunes it, and the graph may be replaced again
    _set(cfg, num_epochs=4)
    assert main(["train", cfg, "--no-progress"]) == 0
    assert [p.name for p in ckpts.glob("v*")] == [(ckpts / "latest").read_text().strip()]
    assert main(["import", cfg, "--overwrite", "--no-progress"]) == 0
    assert sorted(p.name for p in root.glob("*.lock")) == []

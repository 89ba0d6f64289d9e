"""Shared pieces of the fuzz tests: run `tbg import` in-process and judge its outcome.

The only acceptable outcomes of any input are a correct import or exit 2 with exactly one
``tbg import: error: ...`` line on stderr.  An exception escaping ``tbg.cli.main`` (a traceback) fails the
test with that exception.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import h5py
import yaml
from builders import config_data
from hypothesis import HealthCheck, settings

from tbg.cli import main

# seeded, CI-sized: every fuzz test together stays well under a minute on 2 cores
# (TBG_FUZZ_EXAMPLES=1000 for a longer local hunt)
FUZZ = settings(
    max_examples=int(os.environ.get("TBG_FUZZ_EXAMPLES", "60")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

FUZZ_RELATIONS = [("fav", "user", "tweet"), ("follow", "user", "user")]


def fuzz_config(graph_dir: str, train: str, *, mode: str = "names", graph: dict | None = None) -> dict[str, Any]:
    """The fuzz tests' config mapping (:func:`builders.config_data`): user/tweet in 2 partitions, ``train`` as
    both splits' source (its errors name it either way), ``graph`` keys set on the graph section."""
    count = 50 if mode == "indices" else None
    return config_data(
        graph_dir,
        types={"user": (count, 4, 2), "tweet": (count, 4, 2)},
        relations=FUZZ_RELATIONS,
        optimizer={"sgd": {"lr": 0.1}},
        train=train,
        valid=train,
        overrides={"graph.id_mode": mode, **{f"graph.{k}": v for k, v in (graph or {}).items()}},
    )


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of ``tbg ARGV`` run in-process."""
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
    return int(rc or 0), err.getvalue()


def import_with(work: str, cfg: dict[str, Any] | str | bytes) -> tuple[int, str]:
    """Write ``cfg`` (a dict, YAML text or raw bytes) as the config and run ``tbg import`` on it."""
    path = os.path.join(work, "cfg.yaml")
    data = cfg if isinstance(cfg, bytes) else (cfg if isinstance(cfg, str) else yaml.safe_dump(cfg)).encode()
    with open(path, "wb") as fh:
        fh.write(data)
    here = os.getcwd()
    os.chdir(work)  # a fuzzed relative graph.dir or data_root must land in the temp dir, never in the repo
    try:
        return run_cli(["import", path, "--no-progress", "--overwrite"])
    finally:
        os.chdir(here)


def assert_one_error_line(rc: int, stderr: str, mentions: str | None = None) -> None:
    """Exit 2 and one line (split at \\n/\\r only: other Unicode separators are not line breaks on a terminal)."""
    lines = [x for x in stderr.replace("\r", "\n").split("\n") if x.strip()]
    assert rc == 2, f"exit {rc}, stderr:\n{stderr}"
    assert len(lines) == 1 and lines[0].startswith("tbg import: error: "), f"not one error line:\n{stderr}"
    assert "Traceback" not in stderr
    if mentions is not None:
        assert mentions in lines[0], f"error does not name {mentions!r}: {lines[0]}"


def manifest(graph_dir: str) -> dict[str, Any]:
    with open(os.path.join(graph_dir, "manifest.json")) as fh:
        return json.load(fh)


def check_graph_consistent(graph_dir: str) -> dict[str, Any]:
    """The manifest's counts agree with each other and with the bucket files (read with h5py)."""
    m = manifest(graph_dir)
    for split, info in m["splits"].items():
        assert sum(info["per_relation"]) == info["num_edges"] == sum(info["buckets"].values())
        for key, count in info["buckets"].items():
            with h5py.File(os.path.join(graph_dir, split, f"edges_{key}.h5"), "r") as f:
                assert len(f["lhs"]) == len(f["rhs"]) == len(f["rel"]) == count
    return m


def entity_names(graph_dir: str, etype: str) -> list[str]:
    with h5py.File(os.path.join(graph_dir, "entities", f"{etype}.h5"), "r") as f:
        return [x.decode() if isinstance(x, bytes) else x for x in f["names"][...]]

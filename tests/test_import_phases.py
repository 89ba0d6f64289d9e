"""Import speed bookkeeping: seconds per phase in the summary and the CLI table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from builders import child_env, random_index_edges, twhin_config, write_parquet, write_tsv
from readback import graph_multiset, source_multiset

from tbg.graph import Graph
from tbg.importer import import_graph

RELS = [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("follow", "user", "user")]
SIZES = {"user": 50, "tweet": 30}
MAIN_THREAD = ("read_wait", "parse", "route", "spill_write", "spill_read", "shuffle", "bucket_write", "entities")


def _indices_config(tmp_path: Path, partitions: int):
    edges = random_index_edges(3000, 4, SIZES, RELS)
    write_parquet(tmp_path / "e.parquet", {k: edges[k] for k in ("lhs", "rel", "rhs")}, row_group_size=700)
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.parquet"),
        valid=str(tmp_path / "e.parquet"),
        partitions=partitions,
        overrides={"graph.chunk_rows": 400, "validation_data.limit": 100},
    )
    return cfg, edges


def test_summary_reports_seconds_by_phase(tmp_path: Path) -> None:
    cfg, edges = _indices_config(tmp_path, partitions=3)
    summary = import_graph(cfg, progress=False)
    phases = summary.phases
    assert set(MAIN_THREAD) | {"read", "manifest", "commit"} <= set(phases)
    assert all(v >= 0 for v in phases.values())
    # main-thread phases do not overlap each other, so they fit in the import's wall time
    assert sum(phases[k] for k in MAIN_THREAD) <= summary.seconds + 0.01
    assert graph_multiset(Graph(str(tmp_path / "g")), "train") == source_multiset(
        edges["lhs"], edges["rel"], edges["rhs"]
    )


def test_names_mode_phases_include_the_dictionary(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = [(f"u{a}", "fav", f"t{b}") for a, b in zip(rng.integers(0, 40, 900), rng.integers(0, 20, 900))]
    write_tsv(tmp_path / "e.tsv", rows)
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.tsv"),
        valid=str(tmp_path / "e.tsv"),
        types={"user": (None, 4, 1), "tweet": (None, 4, 1)},
        partitions=2,
        overrides={"graph.id_mode": "names", "graph.chunk_rows": 200},
    )
    phases = import_graph(cfg, progress=False).phases
    assert {"dictionary", "id_spill", "route", "bucket_write"} <= set(phases)


def test_cli_table_prints_the_phases(tmp_path: Path) -> None:
    cfg, _ = _indices_config(tmp_path, partitions=2)
    from tbg.config import dump_config

    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "tbg", "import", str(tmp_path / "c.yaml"), "--no-progress"],
        capture_output=True, text=True, env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("seconds by phase: "))
    assert "read " in line and "bucket_write " in line

"""tools/bench/scale_bench.py at CI size: trains under the budget (peak RSS within budget + the stated fixed
overhead), reports swaps against their lower bound and partition traffic, and imports from gs://."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from builders import REPO, child_env
from conftest import fake_gcs_binary


def test_scale_bench_small(tmp_path) -> None:
    args = ["--entities", "250000", "--dim", "16", "--edges", "300000", "--budget", "7MiB", "--tmp", str(tmp_path)]
    args += ["--ref-scale", "0.1"] + (["--no-gcs"] if fake_gcs_binary() is None else [])
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench" / "scale_bench.py"), *args],
        capture_output=True, text=True, env=child_env(), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ratio_to_budget"] >= 4
    train = out["train"]
    assert train["memory_plan"]["num_partitions"]["node"] > 1 and train["memory_plan"]["overlap"]
    assert train["rss_within_budget_plus_overhead"]
    assert train["edges"] == 300000
    assert train["buffer_slots"] >= 3  # the budget keeps a third partition resident (tbg/train/partition_buffer.py)
    assert train["swap_lower_bound"] <= train["swaps"] <= 1.1 * train["swap_lower_bound"] + 2
    assert train["partition_loads"] <= train["swaps"]
    assert train["bytes_read"] > 0 and train["bytes_written"] > 0
    assert out["reference_p1"]["memory_plan"]["num_partitions"]["node"] == 1
    assert out["edges_per_s_ratio"] > 0
    if fake_gcs_binary() is None:
        pytest.skip("fake-gcs-server not installed: gs:// import not run")
    assert out["import_gcs"]["edges"] == out["import_local"]["edges"]
    assert list(tmp_path.iterdir()) == []  # the bench removed its graphs and save dirs

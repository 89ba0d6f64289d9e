"""The fault-injection suite's CI subset (tools/faults/run.py --fast; docs/reliability.md).

One run of the suite is shared: the first test checks that the suite itself works (a well-formed summary
that accounts for every trial), the second that tbg survives every fault (no traceback, no silent loss, no
corruption, no hang).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import child_env

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("recovered", "clear_errors", "tracebacks", "silent_losses", "corruptions", "hangs")
MUST_BE_ZERO = ("tracebacks", "silent_losses", "corruptions", "hangs", "leftovers", "bookkeeping", "reader_failures")


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    env = {**child_env(), "TMPDIR": str(tmp_path_factory.mktemp("faults-logs"))}
    work = tmp_path_factory.mktemp("faults")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "faults" / "run.py"), "--fast", "--seed", "0", "--workdir", str(work)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_fast_suite_accounts_for_every_trial(summary) -> None:
    assert summary["trials"] + summary["skipped"] == 40
    assert summary["trials"] >= 30
    assert sum(summary[k] for k in OUTCOMES) == summary["trials"]
    assert summary["recovered"] > 0
    for case in summary["failures"]:
        assert case["reproducer"]["command"] and "--only" in case["replay"]


def test_fast_suite_finds_no_traceback_loss_or_corruption(summary) -> None:
    bad = {k: summary[k] for k in MUST_BE_ZERO}
    assert bad == dict.fromkeys(bad, 0), json.dumps(summary["failures"], indent=1)[:6000]

"""tbg.processes.process_gone: the liveness test of recorded pids (stale temp files, lost trainers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tbg.processes import process_gone


def test_a_running_process_is_not_gone() -> None:
    assert not process_gone(os.getpid())
    assert not process_gone(1)  # init: another user's process counts as running


def test_a_zombie_and_a_reaped_process_are_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while not process_gone(child.pid):  # exited but not yet waited for: a zombie
        assert time.monotonic() < deadline, "the child never showed as gone"
        time.sleep(0.02)
    assert child.poll() == 0  # reaped only now
    assert process_gone(child.pid)

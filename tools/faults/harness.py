"""Run `tbg` commands as real child processes that can be killed at chosen moments.

The runner imports torch once and forks a child per command; the child redirects stdout/stderr to files,
enters the trial dir and calls the public entry point ``tbg.cli.main(argv)``, so a trial costs no interpreter
start-up or ``import torch`` (about 2 s each on a 2-core machine).  An uncaught exception is printed exactly
as the interpreter would print it, and the exit status is the command's.

A kill plan either sleeps a random delay and sends SIGKILL from the parent, or counts the file-system
operations the child makes (rename/replace/link/fsync/mkdir/remove/rmtree, wrapped at the ``os``/``shutil``
level) and SIGKILLs itself just before or just after the k-th one: that lands deterministically inside a
checkpoint commit, a partition eviction or an output rename.  A reference run records its operation trace
so trials can pick k from the real sequence.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

# the same bounded OpenMP spin `tbg train` sets before torch loads libgomp
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import torch  # noqa: E402,F401  (imported once in the runner; children inherit it)

import tbg.cli  # noqa: E402

HOOKED = {
    "replace": (os, "replace"),
    "rename": (os, "rename"),
    "link": (os, "link"),
    "fsync": (os, "fsync"),
    "mkdir": (os, "mkdir"),
    "remove": (os, "remove"),
    "unlink": (os, "unlink"),
    "rmtree": (shutil, "rmtree"),
}


@dataclass
class KillPlan:
    """``delay_s``: SIGKILL from the parent after that long; ``op_index``: the child kills itself at its
    k-th hooked operation (1-based), ``when`` "before" or "after" it."""

    delay_s: float | None = None
    op_index: int | None = None
    when: str = "before"

    def describe(self) -> str:
        if self.op_index is not None:
            return f"kill -9 {self.when} file-system op #{self.op_index}"
        return f"kill -9 after {self.delay_s:.3f} s"


@dataclass
class Result:
    argv: list[str]
    cwd: str
    rc: int
    stdout: str
    stderr: str
    wall_s: float
    killed: bool = False
    timed_out: bool = False
    ops: list[str] = field(default_factory=list)
    op_times: list[float] = field(default_factory=list)  # time.monotonic() of each op (one clock for all)

    @property
    def command(self) -> str:
        return f"cd {self.cwd} && tbg {' '.join(self.argv)}"


def _install_hooks(plan: KillPlan | None, trace: list[str], times: list[float]) -> None:
    lock = threading.Lock()
    counter = [0]

    def wrap(name: str, fn):
        def hooked(*args, **kwargs):
            with lock:
                counter[0] += 1
                k = counter[0]
                trace.append(f"{name} {args[-1] if name in ('replace', 'rename', 'link') else (args or [''])[0]}")
                times.append(time.monotonic())
            hit = plan is not None and plan.op_index == k
            if hit and plan.when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = fn(*args, **kwargs)
            if hit:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        return hooked

    for name, (module, attr) in HOOKED.items():
        setattr(module, attr, wrap(name, getattr(module, attr)))


def _child(argv: list[str], cwd: str, out_path: str, err_path: str, trace_path: str | None, plan) -> None:
    rc = 1
    try:
        os.chdir(cwd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        trace: list[str] = []
        times: list[float] = []
        _install_hooks(plan, trace, times)
        sys.argv = ["tbg", *argv]
        try:
            rc = tbg.cli.main(list(argv))
            rc = 0 if rc is None else int(rc)
        except SystemExit as exc:
            code = exc.code
            rc = code if isinstance(code, int) else (0 if code is None else 1)
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            rc = 1
        for t in threading.enumerate():  # the interpreter waits for non-daemon threads at exit
            if t is not threading.main_thread() and not t.daemon:
                t.join(timeout=30)
        if trace_path:
            with open(trace_path, "w") as fh:
                json.dump({"ops": trace, "times": times}, fh)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc & 0xFF)


LOG_DIR = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tbg-faults-logs-{os.getpid()}")


@dataclass
class Started:
    argv: list[str]
    cwd: str
    pid: int
    paths: tuple[str, str, str | None]
    start: float
    plan: KillPlan | None


def start_tbg(argv: list[str], cwd: str, plan: KillPlan | None = None, record_ops: bool = False) -> Started:
    """Fork a child running ``tbg ARGV`` in ``cwd``; finish it with :func:`wait_tbg`."""
    os.makedirs(LOG_DIR, exist_ok=True)
    stamp = os.path.join(LOG_DIR, str(time.monotonic_ns()))
    paths = (stamp + ".out", stamp + ".err", stamp + ".ops" if record_ops else None)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(list(argv), cwd, paths[0], paths[1], paths[2], plan)
    return Started(list(argv), cwd, pid, paths, time.monotonic(), plan)


def wait_tbg(started: Started, timeout_s: float = 120.0) -> Result:
    """Wait for the child (SIGKILL at the plan's delay, or when it runs past ``timeout_s``)."""
    plan, pid = started.plan, started.pid
    killed = timed_out = False
    kill_at = started.start + plan.delay_s if plan is not None and plan.delay_s is not None else None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        now = time.monotonic()
        if kill_at is not None and now >= kill_at:
            os.kill(pid, signal.SIGKILL)
            kill_at, killed = None, True
        elif now - started.start >= timeout_s:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.002)
    wall = time.monotonic() - started.start
    rc = -signal.SIGKILL if timed_out else os.waitstatus_to_exitcode(status)
    killed = killed or (plan is not None and rc == -signal.SIGKILL)
    out_path, err_path, ops_path = started.paths
    texts = []
    for path in (out_path, err_path):
        with open(path, errors="replace") as fh:
            texts.append(fh.read())
        os.remove(path)
    ops: list[str] = []
    times: list[float] = []
    if ops_path and os.path.exists(ops_path):
        with open(ops_path) as fh:
            recorded = json.load(fh)
        ops, times = recorded["ops"], recorded["times"]
        os.remove(ops_path)
    return Result(started.argv, started.cwd, rc, texts[0], texts[1], wall, killed, timed_out, ops, times)


def run_tbg(
    argv: list[str], cwd: str, plan: KillPlan | None = None, timeout_s: float = 120.0, record_ops: bool = False
) -> Result:
    """Run ``tbg ARGV`` in ``cwd`` to the end (or to the kill in ``plan``)."""
    return wait_tbg(start_tbg(argv, cwd, plan, record_ops), timeout_s)

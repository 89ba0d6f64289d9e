"""SIGTERM/SIGINT during a command (tbg.interrupts): raised like Ctrl-C, never inside an HDF5 write, never lost
when a finalizer swallows it."""

from __future__ import annotations

import gc
import os
import signal
import sys

import h5py
import numpy as np
import pytest

from tbg import interrupts
from tbg.h5write import create_h5


def _signal_self(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)


def test_sigterm_and_sigint_raise_like_ctrl_c() -> None:
    with pytest.raises(interrupts.Terminated), interrupts.handled():
        _signal_self(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as caught, interrupts.handled():
        _signal_self(signal.SIGINT)
    assert type(caught.value) is KeyboardInterrupt
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_an_interrupt_inside_a_deferred_block_is_raised_when_it_ends() -> None:
    ran = []
    with pytest.raises(interrupts.Terminated), interrupts.handled():
        with interrupts.deferred():
            with interrupts.deferred():
                _signal_self()
                ran.append("inner")
            ran.append("outer")  # still deferred: only the outermost block raises
        ran.append("after")
    assert ran == ["inner", "outer"]


def test_an_hdf5_file_being_written_is_finished_before_the_interrupt(tmp_path) -> None:
    path = tmp_path / "x.h5"
    data = np.arange(100_000, dtype=np.float32)
    with pytest.raises(interrupts.Terminated), interrupts.handled():
        with create_h5(str(path)) as f:
            _signal_self()
            f.create_dataset("x", data=data)  # HDF5 calls back into Python: no interrupt lands in there
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], data)


class _SignalsWhenCollected:
    def __del__(self) -> None:
        _signal_self()
        for _ in range(100):  # the handler runs (and its exception is swallowed) in here
            pass


def test_an_interrupt_swallowed_by_a_finalizer_is_not_lost(monkeypatch) -> None:
    swallowed: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: swallowed.append(info.exc_type))
    with pytest.raises(interrupts.Terminated), interrupts.handled():
        _SignalsWhenCollected()  # collected at once: Python prints "Exception ignored in ... __del__", goes on
        gc.collect()
        assert swallowed == [interrupts.Terminated]
        interrupts.check()  # what long loops (the training steps) call
    with pytest.raises(interrupts.Terminated), interrupts.handled():
        _SignalsWhenCollected()
    # nothing pending once a command has ended
    with interrupts.handled():
        interrupts.check()

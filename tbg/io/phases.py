"""Where an import's time goes: seconds per phase (read, parse, route, spill, shuffle, bucket write, ...).

The importer's stages add their wall seconds to one :class:`PhaseClock`; ``tbg import`` reports them in its
summary and the benchmarks print them, so a slow import says which stage to look at.  A phase timed on the
reader thread (``read``) overlaps the main thread's phases; ``read_wait`` is the main thread waiting for it.
Each phase also has its CPU seconds (of the thread that ran it): on a busy machine wall seconds include waiting
for a core, CPU seconds do not.  Timing is per batch or per bucket, never per edge.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseClock:
    """Accumulated wall and CPU seconds per phase name, safe to add to from several threads."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._cpu: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, phase: str, seconds: float, cpu: float = 0.0) -> None:
        with self._lock:
            self._seconds[phase] = self._seconds.get(phase, 0.0) + seconds
            self._cpu[phase] = self._cpu.get(phase, 0.0) + cpu

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - start, time.thread_time() - cpu)

    def seconds(self) -> dict[str, float]:
        """Phase -> wall seconds (rounded to ms), in the order the phases first ran."""
        with self._lock:
            return {k: round(v, 3) for k, v in self._seconds.items()}

    def cpu_seconds(self) -> dict[str, float]:
        """Phase -> CPU seconds of the thread that ran it (a ``read_wait`` is mostly idle)."""
        with self._lock:
            return {k: round(v, 3) for k, v in self._cpu.items()}

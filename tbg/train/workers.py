"""Hogwild training workers: threads that each run whole steps against the shared tables, without locks.

One step on the reference CPU is a few dozen small tensor operations; spread over intra-op threads, each
one pays a barrier.  Running whole steps side by side, one intra-op thread each, keeps every core busy
instead (measured on 2 cores: 1.22x the edges/s of one worker with 2 threads, docs/training.md).  As in
PBG's Hogwild training, workers read and update the embedding rows and relation parameters without locks;
unlike PBG they are threads of one process, so nothing is copied into shared memory and the process's
memory does not grow with the number of workers.

Each worker owns what must not be shared: a generator for its negatives, and a replica of the relation
model (with a scorer bound to it) whose parameters share the real ones' storage but collect their own
``.grad`` (autograd accumulates into ``.grad``; two workers' backward passes must not mix).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from tbg.model.scoring import RelationModel
from tbg.train.batch_scorer import BatchScorer

T = TypeVar("T")


@dataclass
class Worker:
    scorer: BatchScorer
    params: list[torch.nn.Parameter]  # the relation parameters whose .grad this worker's backward fills
    generator: torch.Generator = field(default_factory=torch.Generator)

    def reseed(self, seed: int, step: int) -> torch.Generator:
        """Negatives of the step group starting at ``step`` come from (seed, step): resuming at a step draws
        the same negatives as the uninterrupted run, with no generator state to save, whichever worker runs it."""
        return self.generator.manual_seed(((seed & 0xFFFFFFFF) << 32) | (step & 0xFFFFFFFF))


def tied_replica(model: RelationModel, fresh: RelationModel) -> RelationModel:
    """``fresh`` (a model built from the same config) with every parameter sharing ``model``'s storage."""
    pairs = list(zip(model.parameters(), fresh.parameters(), strict=True))
    for real, copy in pairs:
        if real.shape != copy.shape:
            raise ValueError(f"replica parameter shape {tuple(copy.shape)} != {tuple(real.shape)}")
        copy.data = real.data
    return fresh


class WorkerPool:
    """``threads`` OS threads, one intra-op thread budget each, every task run with a free :class:`Worker`."""

    def __init__(self, workers: list[Worker], intra_op_threads: int) -> None:
        self._free: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        for w in workers:
            self._free.put(w)
        # OpenMP thread counts are per calling thread: set them in every worker thread
        self._pool = ThreadPoolExecutor(
            max_workers=len(workers),
            thread_name_prefix="tbg-hogwild",
            initializer=torch.set_num_threads,
            initargs=(intra_op_threads,),
        )
        self.size = len(workers)

    def submit(self, fn: Callable[[Worker], T]) -> Future[T]:
        def task() -> T:
            worker = self._free.get()
            try:
                return fn(worker)
            finally:
                self._free.put(worker)

        return self._pool.submit(task)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

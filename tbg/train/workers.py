"""Hogwild training workers: threads that each run whole step groups against the shared tables, without locks.

One step on a CPU is a few dozen small tensor operations; spread over intra-op threads, each one pays a
barrier.  Running whole steps side by side, one intra-op thread each, keeps every core busy instead
(docs/benchmarks.md has the measurements).  As in PBG's Hogwild training, workers read and update the
embedding rows and relation parameters without locks; unlike PBG they are threads of one process, so nothing
is copied into shared memory and the process's memory does not grow with the number of workers.

Each worker owns what must not be shared: a generator for its negatives (on the training device, so
negatives are drawn where they are used), and a replica of the relation
model (with a scorer bound to it) whose parameters share the real ones' storage but collect their own
``.grad`` (autograd accumulates into ``.grad``; two workers' backward passes must not mix).

The pool keeps at most two groups per worker in flight and hands their results back in the order they were
dispatched, on the dispatching thread, so the trainer books steps exactly as one worker would.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from tbg.config import Config
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


def make_workers(cfg: Config, scorer: BatchScorer, count: int) -> list[Worker]:
    """``scorer``'s own worker, then ``count - 1`` more, each with a tied replica of its model."""
    model, device = scorer.model, scorer.device
    workers = [Worker(scorer, list(model.parameters()), torch.Generator(device=device))]
    for _ in range(count - 1):
        replica = tied_replica(model, RelationModel.from_config(cfg).to(device))
        scorer_copy = BatchScorer(cfg, replica, device, scorer.bf16)
        workers.append(Worker(scorer_copy, list(replica.parameters()), torch.Generator(device=device)))
    return workers


class WorkerPool:
    """Runs tasks (step groups) on free :class:`Worker` s: on the calling thread when there is one worker, else
    on one OS thread per worker with ``intra_op_threads`` each.  Use as a context manager: leaving it waits
    for every task in flight, so no worker touches the tables afterwards, even when a task failed."""

    def __init__(self, workers: list[Worker], intra_op_threads: int) -> None:
        self.workers = workers
        self.size = len(workers)
        self._free: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        for w in workers:
            self._free.put(w)
        self._threads: ThreadPoolExecutor | None = None
        if self.size > 1:  # OpenMP thread counts are per calling thread: set them in every worker thread
            self._threads = ThreadPoolExecutor(
                max_workers=self.size,
                thread_name_prefix="tbg-hogwild",
                initializer=torch.set_num_threads,
                initargs=(intra_op_threads,),
            )
        # tasks handed to the threads, oldest first, with what books their result
        self._inflight: deque[tuple[Future[Any], Callable[[Any], None]]] = deque()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def dispatch(self, task: Callable[[Worker], T], book: Callable[[T], None], barrier: bool = False) -> None:
        """Run ``task`` on a free worker; ``book`` gets its result on this thread, in dispatch order.

        Inline with one worker.  Otherwise the oldest tasks are waited for (and booked) while more than two
        per worker are in flight, or, after a ``barrier`` task, until none is.
        """
        if self._threads is None:
            book(task(self.workers[0]))
            return
        self._inflight.append((self._threads.submit(self._run, task), book))
        self.drain(0 if barrier else 2 * self.size)

    def drain(self, keep: int = 0) -> None:
        """Wait for the oldest tasks in flight until ``keep`` remain, booking their results in order."""
        while len(self._inflight) > keep:
            future, book = self._inflight[0]
            result = future.result()
            self._inflight.popleft()
            book(result)

    def shutdown(self) -> None:
        """Stop the threads after the running tasks finish (queued ones are cancelled, nothing is booked)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None
        self._inflight.clear()

    def _run(self, task: Callable[[Worker], T]) -> T:
        worker = self._free.get()
        try:
            return task(worker)
        finally:
            self._free.put(worker)

"""Where a run stands, and how a checkpoint records it (progress.json) beside the trainer's torch state (state.pt).

``position`` is the number of edges of the current bucket already trained in this epoch's deterministic
shuffle, so a checkpoint taken mid-bucket resumes at exactly the next batch.  ``epoch_edges`` lists the edges
trained in each finished epoch (the training split's size, every epoch: each bucket is trained exactly once),
and ``done`` the buckets of the current epoch that a distributed run finished out of order (tbg/distributed/),
``bucket_order`` the order (and partition-buffer slots) the current epoch was planned with, so a resume with
another budget or order setting finishes the epoch in its own order.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any

import torch

from tbg.checkpoint import Checkpoint, CheckpointWriter
from tbg.errors import CheckpointError
from tbg.model.optimizers import RelationOptimizer

STATE_FILE = "state.pt"


@dataclasses.dataclass
class Progress:
    epoch: int = 0
    bucket_index: int = 0  # index into the epoch's bucket order
    position: int = 0
    step: int = 0  # steps completed (1-based numbering: step k is the k-th batch trained)
    edges_seen: int = 0
    epoch_edges: list[int] = dataclasses.field(default_factory=list)
    done: list[list[int]] = dataclasses.field(default_factory=list)
    bucket_order: str = ""  # the current epoch's order and buffer slots ("buffer/3"); "": not yet chosen

    def epoch_edges_so_far(self) -> int:
        """Edges trained in the current epoch."""
        return self.edges_seen - sum(self.epoch_edges)

    def next_bucket(self) -> None:
        self.bucket_index += 1
        self.position = 0

    def next_epoch(self) -> None:
        self.epoch_edges.append(self.epoch_edges_so_far())
        self.epoch += 1
        self.bucket_index = 0
        self.done = []
        self.bucket_order = ""  # (the trainer picks the next epoch's from its config)

    def record(self, **extra: Any) -> dict[str, Any]:
        """The progress.json record: these fields, then ``extra`` (finished, fingerprints, ...)."""
        return {**dataclasses.asdict(self), **extra}

    @classmethod
    def of(cls, ckpt: Checkpoint) -> Progress:
        """A checkpoint's progress; a missing or non-integer field is a CheckpointError naming progress.json."""
        lists = ("epoch_edges", "done", "bucket_order")
        out = cls(**ckpt.counters([f.name for f in dataclasses.fields(cls) if f.name not in lists]))
        path = os.path.join(ckpt.path, "progress.json")
        edges = ckpt.progress.get("epoch_edges", [])  # (older checkpoints have none)
        if not isinstance(edges, list) or not all(isinstance(n, int) and n >= 0 for n in edges):
            raise CheckpointError(f"{path}: epoch_edges: expected a list of integers >= 0, got {edges!r:.60}")
        done = ckpt.progress.get("done", [])
        if not isinstance(done, list) or not all(
            isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) and x >= 0 for x in b) for b in done
        ):
            raise CheckpointError(f"{path}: done: expected a list of [lhs, rhs] partition pairs, got {done!r:.60}")
        order = ckpt.progress.get("bucket_order", "")  # (older checkpoints have none: the trainer's legacy order)
        if not isinstance(order, str):
            raise CheckpointError(f"{path}: bucket_order: expected a string such as 'buffer/3', got {order!r:.60}")
        out.epoch_edges, out.done, out.bucket_order = list(edges), [list(b) for b in done], order
        return out


def write_state(writer: CheckpointWriter, relation_optimizer: RelationOptimizer) -> None:
    """state.pt: the relation optimizer's state (torch tensors, so not in the numpy/h5py shards).

    Serialized in memory (it is small) and written by Python, so a failing disk is an ``OSError`` naming the
    file: ``torch.save`` to a path reports it as a bare ``RuntimeError: basic_ios::clear: iostream error``."""
    buffer = io.BytesIO()
    torch.save({"relation_optimizer": relation_optimizer.state_dict()}, buffer)
    writer.write_file(STATE_FILE, buffer.getvalue())


def read_state(ckpt: Checkpoint, relation_optimizer: RelationOptimizer) -> None:
    """Load state.pt into ``relation_optimizer``, where the checkpoint has one."""
    path = ckpt.file(STATE_FILE)
    if not os.path.exists(path):
        return
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        relation_optimizer.load_state_dict(saved["relation_optimizer"])
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any damage to the zip/pickle: one line naming the file
        problem = " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__
        raise CheckpointError(f"{path}: unreadable trainer state: {problem}") from None

"""Keeping what every trainer shares consistent: relation parameters and unpartitioned tables.

Partitioned tables need no sync: a leased partition has one writer, and moves through the save_dir.  What
every bucket touches (the relation operators, and any entity type with one partition) is merged after each
round of buckets, with one collective per tensor group (gloo on CPU, nccl on GPU):

- relation parameters: the average of the trainers' copies weighted by the edges each trained in the round
  (a trainer that trained nothing counts for nothing);
- unpartitioned tables: the *sum* of the trainers' changes since the last merge (``snapshot + sum(copy -
  snapshot)``): embedding rows are sparse, a row updated by one trainer keeps that trainer's whole update
  instead of a share of it.

Each trainer keeps its own optimizer state (Adagrad sums) for these; a checkpoint holds rank 0's.  Traffic per
round: an all-reduce of the relation parameters plus the unpartitioned tables (``bytes_per_round``); the
measured figures are in docs/distributed.md.  Averaging at bucket boundaries was chosen over an exchange
through the c10d store because the store moves bytes far slower than a collective (docs/distributed.md).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from tbg.model.scoring import RelationModel
from tbg.train.partition_store import PartitionStore


class SharedState:
    def __init__(self, model: RelationModel, store: PartitionStore, unpartitioned: list[tuple[str, int]]) -> None:
        self.model = model
        self.store = store
        self.keys = unpartitioned
        self._snapshots: dict[tuple[str, int], torch.Tensor] = {}

    def params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.numel()]

    @property
    def bytes_per_round(self) -> int:
        rel = sum(p.numel() * 4 for p in self.params())
        return rel + sum(self.store.get(k).table.numel() * 4 for k in self.keys if k in self.store.resident)

    def snapshot(self) -> None:
        """Remember the unpartitioned tables as merged (after start and after each merge)."""
        self._snapshots = {k: self.store.get(k).table.float().clone() for k in self.keys if k in self.store.resident}

    @torch.no_grad()
    def merge(self, edges: int, steps: int, device: torch.device) -> tuple[int, int]:
        """Merge this round's copies (``edges``, ``steps``: trained here this round); returns the edges and
        steps of all trainers."""
        total = torch.tensor([float(edges), float(steps)], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        all_edges, all_steps = int(total[0].item()), int(total[1].item())
        if all_edges == 0:
            return 0, all_steps
        params = self.params()
        if params:
            flat = torch.cat([p.detach().float().reshape(-1) for p in params]) * (edges / all_edges)
            dist.all_reduce(flat)
            offset = 0
            for p in params:
                n = p.numel()
                p.copy_(flat[offset : offset + n].view_as(p))
                offset += n
        for key, before in self._snapshots.items():
            table = self.store.get(key).table
            delta = table.float() - before
            dist.all_reduce(delta)
            table.copy_(before + delta)
            self.store.get(key).dirty = True
        self.snapshot()
        return all_edges, all_steps

"""Validation during training (every ``training.eval_log_every_n`` steps): the loss on the current bucket's
validation edges and, with ``training.validation_mrr``, tbg.evaluation's sampled ranking metrics.

Only the current bucket's partitions are resident, so (as in PBG) the loss covers its bucket; with P=1 that
is the whole split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from tbg.config import Config
from tbg.graph import Graph
from tbg.model.scoring import RelationModel
from tbg.train.batch_scorer import Batch, BatchScorer
from tbg.train.edge_stream import read_all
from tbg.train.gathered_rows import TableKey
from tbg.train.partition_store import PartitionStore

Tables = Callable[[str, str], tuple[TableKey, torch.Tensor]]


class Validation:
    def __init__(
        self,
        cfg: Config,
        graph: Graph,
        scorer: BatchScorer,
        store: PartitionStore,
        model: RelationModel,
        device: torch.device,
    ) -> None:
        self.cfg = cfg
        self.graph = graph
        self.scorer = scorer
        self.store = store
        self.model = model
        self.device = device
        self._cache: dict[tuple[int, int], Batch] = {}  # the current bucket's validation edges

    def record(self, bucket: tuple[int, int], tables: Tables, step: int, epoch: int) -> dict[str, Any] | None:
        """The metrics.jsonl record of a validation at ``step``; None where there is nothing to validate on."""
        val = self.loss(bucket, tables, step)
        if val is None:
            return None
        record: dict[str, Any] = {"step": step, "epoch": epoch, "val_loss": val}
        if self.cfg.training.validation_mrr:
            record.update(self.ranking())
        return record

    @torch.no_grad()
    def loss(self, bucket: tuple[int, int], tables: Tables, step: int) -> float | None:
        """Mean loss per edge over num_eval_steps batches of the bucket's validation edges
        (``num_eval_steps < 0``: all of them), cut short at ``eval_timeout_in_s``."""
        if "valid" not in self.graph.splits:
            return None
        if bucket not in self._cache:
            self._cache = {bucket: read_all(self.graph, "valid", bucket, self.device)}
        edges = self._cache[bucket]
        data = self.cfg.validation_data
        steps = self.cfg.training.num_eval_steps
        limit = len(edges) if steps < 0 else min(len(edges), steps * data.per_replica_batch_size)
        if limit == 0:
            return None
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.runtime.seed + 7919 * step)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        deadline = time.perf_counter() + self.cfg.training.eval_timeout_in_s
        done = 0
        for lo in range(0, limit, data.per_replica_batch_size):
            if time.perf_counter() > deadline:  # eval_timeout_in_s: report the batches scored so far
                break
            hi = min(limit, lo + data.per_replica_batch_size)
            w = None if edges.weight is None else edges.weight[lo:hi]
            b = Batch(edges.lhs[lo:hi], edges.rhs[lo:hi], edges.rel[lo:hi], w)
            res = self.scorer.score(b, tables, data, gen, grad=False)
            total += res.loss.double()
            done = hi
        return float(total) / done if done else None

    @torch.no_grad()
    def ranking(self) -> dict[str, float]:
        """tbg.evaluation's sampled, train+valid-filtered validation metrics on the training device; resident
        partitions are ranked in place, the others read from their swap/checkpoint files."""
        from tbg.evaluation.evaluate import validation_metrics

        def embeddings(etype: str, part: int) -> torch.Tensor:
            key = (etype, part)
            if key in self.store.resident:  # ranked where it lives: no device -> host -> device round trip
                return self.store.get(key).table
            emb = self.store.read(key)[0]
            return emb.float() if isinstance(emb, torch.Tensor) else torch.from_numpy(emb).float()

        return validation_metrics(self.cfg, self.graph, embeddings, self.model, device=self.device)

"""The training run: buckets in order, batches, logging, validation, checkpoints, resume.

Progress is (epoch, bucket_index, position, step): ``position`` is the number of edges of the current
bucket already trained in this epoch's deterministic shuffle, so a checkpoint taken mid-bucket resumes at
exactly the next batch.  A run ends at ``num_epochs`` or ``num_train_steps``, whichever comes first.
Steps run in groups (``gradient_accumulation`` batches, one update) on the calling thread or, with
``runtime.hogwild_workers`` > 1, on lock-free worker threads (tbg/train/workers.py) while this thread reads
edges and books the finished steps in order.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import torch

from tbg.checkpoint import Checkpoint, CheckpointStore, open_checkpoint
from tbg.config import Config, dump_config
from tbg.consistency import check_checkpoint, check_trainable, model_fingerprint
from tbg.errors import CheckpointError
from tbg.graph import Graph
from tbg.model.optimizers import RelationOptimizer
from tbg.model.scoring import RelationModel
from tbg.train import runtime
from tbg.train.edges import EdgeSource, batches, read_all
from tbg.train.partitions import SWAP_DIR, PartitionStore
from tbg.train.schedule import bucket_order
from tbg.train.step import Batch, BatchScorer, TableKey, coalesced_grads
from tbg.train.workers import Worker, WorkerPool, tied_replica

METRICS = "metrics.jsonl"


class Trainer:
    def __init__(self, cfg: Config, graph: Graph | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.graph = graph if graph is not None else Graph(cfg.graph_dir)
        check_trainable(cfg, self.graph)
        self.device, self.bf16 = runtime.setup(cfg)
        self.progress_bar = progress
        self.save_dir = cfg.training.save_dir
        self.model = RelationModel.from_config(cfg).to(self.device)
        self.rel_opt = RelationOptimizer(list(self.model.parameters()), cfg.model.translation_optimizer)
        self.scorer = BatchScorer(cfg, self.model, self.device, self.bf16)
        count, self.threads_per_worker = runtime.hogwild_workers(cfg, self.device)
        self.workers = [Worker(self.scorer, list(self.model.parameters()))]
        for _ in range(count - 1):
            replica = tied_replica(self.model, RelationModel.from_config(cfg).to(self.device))
            self.workers.append(Worker(BatchScorer(cfg, replica, self.device, self.bf16), list(replica.parameters())))
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tbg-prefetch")
        types = self.graph.entity_types
        self.partitioned = {t: types[t].num_partitions > 1 for t in types}
        sizes = {(t, p): types[t].partition_size(p) for t in types for p in range(types[t].num_partitions)}
        counts = {t: types[t].count for t in types}
        self.store = PartitionStore(
            cfg, counts, sizes, self.device, os.path.join(self.save_dir, SWAP_DIR), self.executor
        )
        chunk = cfg.training.max_edges_per_chunk
        self.edges = EdgeSource(self.graph, "train", chunk, self.device, cfg.runtime.seed, self.executor)
        self.ckpts = CheckpointStore(self.save_dir, cfg.training.checkpoint_max_to_keep)
        self.grid = (self.graph.num_lhs_partitions, self.graph.num_rhs_partitions)
        self.table_opts = {t.name: t.optimizer for t in cfg.model.embeddings.tables}
        self.fingerprint = model_fingerprint(cfg)
        self.state = {"epoch": 0, "bucket_index": 0, "position": 0, "step": 0, "edges_seen": 0}
        self.bucket: tuple[int, int] = (0, 0)
        self._val_cache: dict[tuple[int, int], Batch] = {}
        self.last_loss: float | None = None
        self.last_val_loss: float | None = None
        self._pending: list = []  # train_step: gathered rows of micro-batches not applied yet
        self._micro = 0
        self._pool: WorkerPool | None = None
        # step groups handed to the pool, oldest first: (future of their losses, [(position, size)])
        self._inflight: deque[tuple[Future[list[torch.Tensor]], list[tuple[int, int]]]] = deque()

    # ------------------------------------------------------------------ start
    def start(self, fresh: bool = False) -> str:
        """Resume from the latest checkpoint, else warm-start or initialise; returns what happened."""
        if fresh:
            for sub in (self.ckpts.root, os.path.join(self.save_dir, SWAP_DIR)):
                shutil.rmtree(sub, ignore_errors=True)
            metrics = os.path.join(self.save_dir, METRICS)
            if os.path.exists(metrics):
                os.remove(metrics)
        os.makedirs(self.save_dir, exist_ok=True)
        latest = self.ckpts.latest()
        if latest is not None:
            self._load(latest, resume=True)
            return f"resumed from {latest.path} at step {self.state['step']}"
        init = self.cfg.training.initial_checkpoint_dir
        if init:
            ckpt = open_checkpoint(init)
            self._load(ckpt, resume=False)
            return f"warm start from {ckpt.path} (weights only, step 0)"
        return "fresh start"

    def _load(self, ckpt: Checkpoint, resume: bool) -> None:
        fix = (
            "use `tbg train --fresh` or another training.save_dir" if resume else "fix training.initial_checkpoint_dir"
        )
        check_checkpoint(self.cfg, self.graph, ckpt, fix)
        sources = {key: ckpt.embedding_path(*key) for key in self.store.keys if ckpt.has_embeddings(*key)}
        self.store.set_sources(sources, with_optimizer=resume)
        rel = {k: torch.from_numpy(v) for k, v in ckpt.relations().items()}
        try:
            self.model.load_state_dict(rel)
        except RuntimeError as exc:  # missing/unexpected/mis-shaped parameters
            problem = " ".join(str(exc).split())
            raise CheckpointError(f"{ckpt.file('relations.h5')}: relation parameters do not fit: {problem}") from None
        if not resume:
            return
        state_path = ckpt.file("state.pt")
        if os.path.exists(state_path):
            try:
                saved = torch.load(state_path, map_location="cpu", weights_only=False)
                self.rel_opt.load_state_dict(saved["relation_optimizer"])
            except CheckpointError:
                raise
            except Exception as exc:  # noqa: BLE001 - any damage to the pickle/zip: one line naming the file
                problem = " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__
                raise CheckpointError(f"{state_path}: unreadable trainer state: {problem}") from None
        self.state.update(ckpt.counters(list(self.state)))

    # ------------------------------------------------------------------ helpers
    def bucket_keys(self, bucket: tuple[int, int]) -> list[TableKey]:
        keys = set()
        for rel in self.cfg.model.relations:
            keys.add(self._key(rel.lhs, "lhs", bucket))
            keys.add(self._key(rel.rhs, "rhs", bucket))
        return sorted(keys)

    def _key(self, etype: str, side: str, bucket: tuple[int, int]) -> TableKey:
        if not self.partitioned[etype]:
            return (etype, 0)
        return (etype, bucket[0] if side == "lhs" else bucket[1])

    def _tables(self, etype: str, side: str) -> tuple[TableKey, torch.Tensor]:
        key = self._key(etype, side, self.bucket)
        return key, self.store.get(key).table

    def finished(self) -> bool:
        t = self.cfg.training
        return self.state["epoch"] >= t.num_epochs or self.state["step"] >= t.num_train_steps

    def _steps_per_epoch(self) -> int:
        b = self.cfg.train_data.per_replica_batch_size
        return sum(-(-self.graph.bucket_count("train", i, j) // b) for i, j in self._all_buckets())

    def _all_buckets(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.grid[0]) for j in range(self.grid[1])]

    def _metrics(self, record: dict[str, Any]) -> None:
        with open(os.path.join(self.save_dir, METRICS), "a") as fh:
            fh.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ one step
    def run_group(self, worker: Worker, group: list[Batch], first_step: int) -> list[torch.Tensor]:
        """Steps ``first_step``.. (1-based) as one update: forward + backward of each micro-batch, then the
        summed gradients applied once (a group is ``gradient_accumulation`` batches, or fewer where it is cut
        at a checkpoint or the end of a bucket).  Runs on a Hogwild worker or the calling thread."""
        gen = worker.reseed(self.cfg.runtime.seed, first_step)
        gathered, losses = [], []
        for batch in group:
            result = worker.scorer.score(batch, self._tables, self.cfg.train_data, gen)
            gathered += result.gathered
            losses.append(result.loss)
        self._apply(worker, gathered, first_step + len(group) - 1)
        return losses

    def _apply(self, worker: Worker, gathered: list, last_step: int) -> None:
        """Step the relation optimizer and the touched embedding rows with a group's gradients (coalesced per
        table, so an entity seen in several micro-batches gets one summed-gradient update)."""
        lr_step = last_step - 1  # schedules count the steps completed before this one
        self.rel_opt.step(self.cfg.model.translation_optimizer.lr_at(lr_step), worker.params)
        for key, (rows, grad) in coalesced_grads(gathered).items():
            res = self.store.get(key)
            res.optimizer.step(rows, grad, self.table_opts[key[0]].lr_at(lr_step), owned=True)
            res.dirty = True

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One batch on the calling thread (worker 0), outside :meth:`run`'s bookkeeping; parameters move every
        ``gradient_accumulation`` calls, as in a run."""
        worker = self.workers[0]
        if not self._micro:
            worker.reseed(self.cfg.runtime.seed, self.state["step"] + 1)
        result = worker.scorer.score(batch, self._tables, self.cfg.train_data, worker.generator)
        self._pending += result.gathered
        self._micro += 1
        if self._micro >= (self.cfg.training.gradient_accumulation or 1):
            self.apply_updates()
        return result.loss

    def apply_updates(self) -> None:
        """Apply :meth:`train_step`'s pending gradients."""
        if self._micro:
            self._apply(self.workers[0], self._pending, self.state["step"] + 1)
        self._pending, self._micro = [], 0

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Mean loss per edge over num_eval_steps batches of the current bucket's validation edges.

        Only the current bucket's partitions are resident, so (as in PBG) validation covers its bucket;
        with P=1 that is the whole split.  ``num_eval_steps < 0`` means all of it.
        """
        if "valid" not in self.graph.splits:
            return None
        if self.bucket not in self._val_cache:
            self._val_cache = {self.bucket: read_all(self.graph, "valid", self.bucket, self.device)}
        edges = self._val_cache[self.bucket]
        data = self.cfg.validation_data
        steps = self.cfg.training.num_eval_steps
        limit = len(edges) if steps < 0 else min(len(edges), steps * data.per_replica_batch_size)
        if limit == 0:
            return None
        gen = torch.Generator().manual_seed(self.cfg.runtime.seed + 7919 * self.state["step"])
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        deadline = time.perf_counter() + self.cfg.training.eval_timeout_in_s
        done = 0
        for lo in range(0, limit, data.per_replica_batch_size):
            if time.perf_counter() > deadline:  # eval_timeout_in_s: report the batches scored so far
                break
            hi = min(limit, lo + data.per_replica_batch_size)
            w = None if edges.weight is None else edges.weight[lo:hi]
            b = Batch(edges.lhs[lo:hi], edges.rhs[lo:hi], edges.rel[lo:hi], w)
            res = self.scorer.score(b, self._tables, data, gen, grad=False)
            total += res.loss.double()
            done = hi
        return float(total) / done if done else None

    @torch.no_grad()
    def validation_ranking(self) -> dict[str, float]:
        """``training.validation_mrr``: tbg.evaluation's sampled, train+valid-filtered validation metrics.

        Resident partitions are read from memory, the others from their swap/checkpoint files.
        """
        from tbg.evaluation.evaluate import validation_metrics

        def embeddings(etype: str, part: int) -> torch.Tensor:
            key = (etype, part)
            if key in self.store.resident:
                return self.store.get(key).table.float().cpu()
            emb = self.store.read(key)[0]
            return emb.float() if isinstance(emb, torch.Tensor) else torch.from_numpy(emb).float()

        return validation_metrics(self.cfg, self.graph, embeddings, self.model)

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> str:
        self.apply_updates()
        latest = self.ckpts.latest()
        writer = self.ckpts.begin(latest.version + 1 if latest is not None else 1)
        try:
            self.store.write_checkpoint(writer)
            writer.write_relations({k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()})
            torch.save({"relation_optimizer": self.rel_opt.state_dict()}, writer.path("state.pt"))
            writer.write_file("config.yaml", dump_config(self.cfg))
            return writer.commit(
                {
                    **self.state,
                    "finished": self.finished(),
                    "model_fingerprint": self.fingerprint,
                    "graph_import_id": self.graph.import_id,
                }
            )
        except BaseException:
            writer.abort()
            raise

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        t = self.cfg.training
        total = min(t.num_train_steps, t.num_epochs * self._steps_per_epoch())
        self._bar = tqdm(
            total=total, initial=min(total, self.state["step"]), unit="step", file=sys.stderr,
            disable=not self.progress_bar, dynamic_ncols=True,
        )  # fmt: skip
        started = time.perf_counter()
        start_step, start_edges = self.state["step"], self.state["edges_seen"]
        self._window = [
            torch.zeros((), dtype=torch.float64, device=self.device),
            0,
            time.perf_counter(),
        ]  # loss, edges, since
        self._last_ckpt_step = -1
        s = self.state
        if len(self.workers) > 1:
            self._pool = WorkerPool(self.workers, self.threads_per_worker)
        try:
            self._run_epochs()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        self._bar.close()
        wall = time.perf_counter() - started
        if s["step"] != self._last_ckpt_step:
            self.checkpoint()
        self.executor.shutdown(wait=True)
        edges = s["edges_seen"] - start_edges
        return {
            "steps": s["step"] - start_step, "step": s["step"], "epoch": s["epoch"], "edges": edges,
            "wall_s": wall, "edges_per_s": edges / max(wall, 1e-9), "final_loss": self.last_loss,
            "val_loss": self.last_val_loss, "bf16": self.bf16, "device": str(self.device),
            "threads": torch.get_num_threads(), "hogwild_workers": len(self.workers),
        }  # fmt: skip

    def _run_epochs(self) -> None:
        t, s = self.cfg.training, self.state
        while not self.finished():
            order = bucket_order(self.grid[0], self.grid[1], t.bucket_order, self.cfg.runtime.seed, s["epoch"])
            while s["bucket_index"] < len(order) and not self.finished():
                self.bucket = order[s["bucket_index"]]
                if self.edges.count(self.bucket) == 0:  # nothing to train: keep what is resident
                    s["bucket_index"] += 1
                    s["position"] = 0
                    continue
                self.store.need(self.bucket_keys(self.bucket))
                self._prefetch_next(order)
                self._train_bucket()
                if s["position"] >= self.edges.count(self.bucket) or not self.finished():
                    s["bucket_index"] += 1
                    s["position"] = 0
            if s["bucket_index"] >= len(order):
                s["epoch"] += 1
                s["bucket_index"] = 0

    def _train_bucket(self) -> None:
        """The current bucket's batches from the saved position, as step groups run inline (one worker) or
        by the Hogwild pool; returns with every group applied and booked (the next bucket swaps tables).

        A group is cut where a checkpoint is due or ``num_train_steps`` ends the run, and the pool is drained
        after a group holding such a step or a validation step: a checkpoint then holds exactly the steps
        before its position, and validation sees no step in flight."""
        t, s = self.cfg.training, self.state
        size = self.cfg.train_data.per_replica_batch_size
        accumulate = t.gradient_accumulation or 1
        start, planned = s["position"], s["step"]
        group: list[tuple[int, Batch]] = []
        try:
            for chunk in self.edges.chunks(s["epoch"], self.bucket, start):
                for position, batch in batches(chunk, size, start):
                    group.append((position, batch))
                    planned += 1
                    last = planned >= t.num_train_steps
                    if len(group) >= accumulate or planned % t.checkpoint_every_n == 0 or last:
                        self._dispatch(group, planned)
                        group = []
                    if last:
                        break
                if planned >= t.num_train_steps:
                    break
            if group:
                self._dispatch(group, planned)
            self._drain(0)
        except BaseException:
            wait([future for future, _ in self._inflight])  # no worker may touch the tables after this
            self._inflight.clear()
            raise

    def _dispatch(self, group: list[tuple[int, Batch]], last_step: int) -> None:
        """Run one step group (inline, or on the pool with at most 2 groups per worker in flight) and book its
        steps in order."""
        first = last_step - len(group) + 1
        sizes = [(position, len(batch)) for position, batch in group]
        work = [batch for _, batch in group]
        if self._pool is None:
            self._book(sizes, self.run_group(self.workers[0], work, first))
            return
        self._inflight.append((self._pool.submit(lambda w: self.run_group(w, work, first)), sizes))
        t = self.cfg.training
        barrier = any(
            step % t.checkpoint_every_n == 0 or step % t.eval_log_every_n == 0 or step >= t.num_train_steps
            for step in range(first, last_step + 1)
        )
        self._drain(0 if barrier else 2 * self._pool.size)

    def _drain(self, keep: int) -> None:
        """Wait for the oldest groups in flight until ``keep`` remain, booking their steps in order."""
        while len(self._inflight) > keep:
            future, sizes = self._inflight[0]
            losses = future.result()
            self._inflight.popleft()
            self._book(sizes, losses)

    def _book(self, sizes: list[tuple[int, int]], losses: list[torch.Tensor]) -> None:
        for (position, size), loss in zip(sizes, losses, strict=True):
            self._after_step(position, size, loss)

    def _after_step(self, position: int, size: int, loss: torch.Tensor) -> None:
        """Bookkeeping after a batch: progress, logging, validation, periodic checkpoint."""
        t, s = self.cfg.training, self.state
        s["step"] += 1
        s["position"] = position
        s["edges_seen"] += size
        self._window[0] += loss.double()
        self._window[1] += size
        self._bar.update(1)
        if s["step"] % t.train_log_every_n == 0 or self.finished():
            now = time.perf_counter()
            self.last_loss = float(self._window[0]) / max(1, self._window[1])
            rate = self._window[1] / max(1e-9, now - self._window[2])
            lr = self.table_opts[self.cfg.model.embeddings.tables[0].name].lr_at(s["step"] - 1)
            self._metrics(
                {"step": s["step"], "epoch": s["epoch"], "loss": self.last_loss, "edges_per_s": rate, "lr": lr,
                 "time": time.time()}
            )  # fmt: skip
            self._bar.set_postfix(loss=f"{self.last_loss:.4f}", edges_s=f"{rate:,.0f}", refresh=False)
            self._window = [torch.zeros((), dtype=torch.float64, device=self.device), 0, now]
        if s["step"] % t.eval_log_every_n == 0:
            val = self.validation_loss()
            if val is not None:
                self.last_val_loss = val
                record = {"step": s["step"], "epoch": s["epoch"], "val_loss": val}
                if t.validation_mrr:
                    record.update(self.validation_ranking())
                self._metrics({**record, "time": time.time()})
        if s["step"] % t.checkpoint_every_n == 0:
            self.checkpoint()
            self._last_ckpt_step = s["step"]

    def _prefetch_next(self, order: list[tuple[int, int]]) -> None:
        """Read the next bucket's partitions and first edge chunk in the background."""
        s = self.state
        if s["bucket_index"] + 1 < len(order):
            epoch, nxt = s["epoch"], order[s["bucket_index"] + 1]
        elif s["epoch"] + 1 < self.cfg.training.num_epochs:
            epoch = s["epoch"] + 1
            t = self.cfg.training
            nxt = bucket_order(self.grid[0], self.grid[1], t.bucket_order, self.cfg.runtime.seed, epoch)[0]
        else:
            return
        current = set(self.bucket_keys(self.bucket))
        self.store.prefetch([k for k in self.bucket_keys(nxt) if k not in current])
        self.edges.prefetch(epoch, nxt)

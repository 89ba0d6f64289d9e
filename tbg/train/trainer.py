"""The training run: schedule -> bucket -> step groups -> checkpoint.

Each epoch visits every bucket once, in the configured order (bucket_order.py).  A bucket's partitions are
made resident (partition_store.py; which others stay: partition_buffer.py), and the next buckets whose
partitions are all resident follow without draining the pool.  Shuffled edges (edge_stream.py) are cut
into step groups of ``gradient_accumulation`` batches, one update each, run by the worker pool (workers.py: inline, or
on Hogwild threads) and booked in order: progress (progress.py), metrics.jsonl and the bar (metrics_log.py),
validation (validation.py) and periodic checkpoints.  A run ends at ``num_epochs`` or ``num_train_steps``,
whichever comes first, and resumes from its latest checkpoint at exactly the next batch.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tbg import interrupts, memory, runtime
from tbg.checkpoint import Checkpoint, CheckpointStore, open_checkpoint
from tbg.config import Config, dump_config
from tbg.consistency import (
    check_checkpoint,
    check_optimizers,
    check_shards,
    check_trainable,
    model_fingerprint,
    resolve_partitions,
)
from tbg.errors import CheckpointError
from tbg.graph import Graph
from tbg.model.lr_scaling import ScaledLr, effective_batch
from tbg.model.optimizers import RelationOptimizer
from tbg.model.scoring import RelationModel
from tbg.train.batch_scorer import Batch, BatchScorer, coalesced_grads, relation_groups
from tbg.train.bucket_order import ORDERS, bucket_order
from tbg.train.edge_stream import EdgeSource, batches
from tbg.train.finite_guard import RELATIONS, FiniteGuard, GroupChecks, check_tables, finite_sum
from tbg.train.gathered_rows import Gathered, TableKey
from tbg.train.metrics_log import MetricsLog
from tbg.train.partition_buffer import BufferSchedule, Unit
from tbg.train.partition_store import SWAP_DIR, PartitionStore
from tbg.train.progress import Progress, read_state, write_state
from tbg.train.swap_report import SwapReport
from tbg.train.validation import Tables, Validation
from tbg.train.workers import Worker, WorkerPool, make_workers

Bucket = tuple[int, int]


@dataclass
class StepGroup:
    """Micro-batches scored toward one update on one worker."""

    worker: Worker
    last_step: int  # the update uses this step's learning rates
    gathered: list[Gathered] = field(default_factory=list)
    batches: int = 0


class Trainer:
    """``progress``: whether to show the tqdm bar (metrics.jsonl is always written)."""

    def __init__(self, cfg: Config, graph: Graph | None = None, progress: bool = True) -> None:
        self.graph = graph if graph is not None else Graph(cfg.graph_dir)
        cfg = self.cfg = resolve_partitions(cfg, self.graph)  # num_partitions: auto -> the graph's
        check_trainable(cfg, self.graph)
        self.plan = memory.graph_plan(cfg, self.graph)  # refuses a budget that cannot hold a bucket
        self.device, self.bf16 = runtime.setup(cfg)
        self.save_dir = cfg.training.save_dir
        self.model = RelationModel.from_config(cfg).to(self.device)
        self.rel_opt = RelationOptimizer(list(self.model.parameters()), cfg.model.translation_optimizer)
        self.scorer = BatchScorer(cfg, self.model, self.device, self.bf16)
        count, self.threads_per_worker = runtime.hogwild_workers(cfg, self.device)
        self.workers = make_workers(cfg, self.scorer, count)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tbg-prefetch")
        types = self.graph.entity_types
        self.partitioned = {t: types[t].num_partitions > 1 for t in types}
        sizes = {(t, p): types[t].partition_size(p) for t in types for p in range(types[t].num_partitions)}
        counts = {t: types[t].count for t in types}
        swap_dir = os.path.join(self.save_dir, SWAP_DIR)
        plan = self.plan
        self.store = PartitionStore(cfg, counts, sizes, self.device, swap_dir, plan.capacity, plan.overlaps)
        chunk = plan.chunk_edges
        groups, rel_group = relation_groups(cfg.model.relations)  # several: one-group batches (edge_stream)
        self.edges = EdgeSource(
            self.graph, "train", chunk, self.device, cfg.runtime.seed, self.executor, cfg.training.train_on.value,
            np.asarray(rel_group, dtype=np.int64) if len(groups) > 1 else None, cfg.train_data.per_replica_batch_size,
        )  # fmt: skip
        self.ckpts = CheckpointStore(self.save_dir, cfg.training.checkpoint_max_to_keep)
        self.grid = (self.graph.num_lhs_partitions, self.graph.num_rhs_partitions)
        sides = [{r.lhs for r in cfg.model.relations}, {r.rhs for r in cfg.model.relations}]
        self.shared_grid = len({frozenset(t for t in side if self.partitioned[t]) for side in sides}) == 1
        self.slots = plan.buffer_slots if self.grid != (1, 1) else None  # partition indices kept resident
        self._orders: dict[int, tuple[list[Bucket], int | None]] = {}
        self._schedule: tuple[int, BufferSchedule] | None = None
        self._units: set[Unit] = set()  # the units resident (tbg/train/partition_buffer.py)
        self.swaps = SwapReport(self.grid, self.shared_grid, self._order_slots, self.store.stats)
        batch, epoch = effective_batch(cfg), self._steps_per_epoch()  # each lr at this batch (optimizer.lr_scaling)
        self.table_lrs = {t.name: ScaledLr(t.optimizer, batch, epoch) for t in cfg.model.embeddings.tables}
        self.rel_lr = ScaledLr(cfg.model.translation_optimizer, batch, epoch)
        self.fingerprint = model_fingerprint(cfg)
        self.progress = Progress()
        self.bucket: Bucket = (0, 0)
        self.log = MetricsLog(self.save_dir, self.device, show_bar=progress)
        self.validation = Validation(cfg, self.graph, self.scorer, self.store, self.model, self.device)
        self._open: StepGroup | None = None  # train_step's group, until its update is applied
        self.guard = FiniteGuard()

    # ------------------------------------------------------------------ start
    def start(self, fresh: bool = False, allow_optimizer_change: bool = False) -> str:
        """Resume from the latest checkpoint, else warm-start or initialise; returns what happened.

        Resuming with another optimizer than the checkpoint's is refused unless ``allow_optimizer_change``."""
        if fresh:
            self.ckpts.remove_all()  # (refused while an eval or export reads one of them)
            shutil.rmtree(os.path.join(self.save_dir, SWAP_DIR), ignore_errors=True)
            self.log.clear()
        os.makedirs(self.save_dir, exist_ok=True)
        how = self._restore(allow_optimizer_change)
        self._advance_cursor()  # a checkpoint taken at the end of a bucket by an older tbg points at its end
        self.log.cut_back(self.progress.step)  # records after the resumed step are trained (and logged) again
        return how

    def _restore(self, allow_optimizer_change: bool) -> str:
        latest = self.ckpts.latest()
        if latest is not None:
            self._load(latest, resume=True)
            changed = check_optimizers(self.cfg, latest, allow_optimizer_change)
            note = f" with a changed {', '.join(changed)}" if changed else ""
            return f"resumed from {latest.path} at step {self.progress.step}{note}"
        init = self.cfg.training.initial_checkpoint_dir
        if init:
            with open_checkpoint(init) as ckpt:  # pinned while read (its shards are linked into the swap dir)
                grown = self._load(ckpt, resume=False)
            what = "weights and optimizer state" if self.cfg.training.warm_start_optimizer else "weights only"
            note = f", {grown:,} new entities initialised" if grown else ""
            return f"warm start from {ckpt.path} ({what}, step 0{note})"
        return "fresh start"

    def _load(self, ckpt: Checkpoint, resume: bool) -> int:
        """Start from ``ckpt``: resume (everything) or warm start (weights, optionally optimizer state; a
        checkpoint of the graph before an append fills the rows it has).  Returns the number of new rows."""
        fix = (
            "use `tbg train --fresh` or another training.save_dir" if resume else "fix training.initial_checkpoint_dir"
        )
        counts = check_checkpoint(self.cfg, self.graph, ckpt, fix, warm_start=not resume)
        check_shards(self.cfg, self.graph, ckpt, counts)  # a missing shard is an error, never a re-initialised one
        sources = {key: ckpt.embedding_path(*key) for key in self.store.keys}
        with_optimizer = resume or self.cfg.training.warm_start_optimizer
        self.store.set_sources(sources, with_optimizer=with_optimizer, trained_counts=counts)
        rel = {k: torch.from_numpy(v) for k, v in ckpt.relations().items()}
        try:
            self.model.load_state_dict(rel)
        except RuntimeError as exc:  # missing/unexpected/mis-shaped parameters
            problem = " ".join(str(exc).split())
            raise CheckpointError(f"{ckpt.file('relations.h5')}: relation parameters do not fit: {problem}") from None
        if with_optimizer:
            read_state(ckpt, self.rel_opt)
        if resume:
            self.progress = Progress.of(ckpt)
            if not self.progress.bucket_order:  # a checkpoint from before the order was recorded
                order = self.cfg.training.bucket_order.value
                self.progress.bucket_order = order if order != "buffer" else "inside_out"
        if counts is None:
            return 0
        return sum(t.count - counts[name] for name, t in self.graph.entity_types.items())

    # ------------------------------------------------------------------ buckets
    def finished(self) -> bool:
        t = self.cfg.training
        return self.progress.epoch >= t.num_epochs or self.progress.step >= t.num_train_steps

    def _advance_cursor(self) -> None:
        """Move the progress past finished buckets and epochs (and empty buckets), so it always names the next
        batch to train: a checkpoint taken after a bucket's last batch then says where the run goes on and,
        after the last one, ``finished: true`` whatever ``checkpoint_every_n`` is."""
        p = self.progress
        while not self.finished():
            order = self._order(p.epoch)
            if p.bucket_index >= len(order):
                p.next_epoch()
            elif p.position >= self.edges.count(order[p.bucket_index]) or list(order[p.bucket_index]) in p.done:
                p.next_bucket()  # (``done``: trained out of order by a distributed run)
            else:
                return

    def _order(self, epoch: int) -> list[Bucket]:
        return self._order_slots(epoch)[0]

    def _order_spec(self) -> str:
        """The order (and buffer slots) an epoch starting now is planned with, as progress.json records it."""
        name = self.cfg.training.bucket_order.value
        return f"{name}/{self.slots}" if self.slots is not None else name

    def _order_slots(self, epoch: int) -> tuple[list[Bucket], int | None]:
        """The buckets of ``epoch`` and the buffer slots they were planned for: the current epoch's as its
        progress records them (a resume with another budget finishes the epoch in its order), later ones
        from the config."""
        p = self.progress
        if epoch == p.epoch and not p.bucket_order:
            p.bucket_order = self._order_spec()
        if epoch not in self._orders:  # (asked for at every bucket: computed once per epoch)
            spec = p.bucket_order if epoch == p.epoch else self._order_spec()
            name, _, count = spec.partition("/")
            if name not in ORDERS or not (count.isdigit() or count == ""):
                raise CheckpointError(f"progress.json: bucket_order: unknown order {spec!r}")
            slots = int(count) if count else None
            seed = self.cfg.runtime.seed
            order = bucket_order(self.grid[0], self.grid[1], name, seed, epoch, shared=self.shared_grid, slots=slots)
            self._orders = {**{e: o for e, o in self._orders.items() if e >= epoch - 1}, epoch: (order, slots)}
        return self._orders[epoch]

    def _buffer(self, epoch: int) -> BufferSchedule:
        """Belady's schedule over ``epoch``'s order and the next epoch's (what to keep resident at its end)."""
        if self._schedule is None or self._schedule[0] != epoch:
            order = list(self._order(epoch))
            if epoch + 1 < self.cfg.training.num_epochs:
                order += self._order(epoch + 1)
            self._schedule = (epoch, BufferSchedule(order, *self.grid, self.shared_grid))
        return self._schedule[1]

    def unit_keys(self, unit: Unit) -> set[TableKey]:
        """The partitions of a buffer unit (shared grid: index i on both sides; else one side's index)."""
        side, index = unit
        keys = set()
        for rel in self.cfg.model.relations:
            for s, etype in ((0, rel.lhs), (1, rel.rhs)):
                if self.partitioned[etype] and (self.shared_grid or s == side):
                    keys.add((etype, index))
        return keys

    def bucket_keys(self, bucket: Bucket) -> list[TableKey]:
        keys = set()
        for rel in self.cfg.model.relations:
            keys.add(self._key(rel.lhs, "lhs", bucket))
            keys.add(self._key(rel.rhs, "rhs", bucket))
        return sorted(keys)

    def _key(self, etype: str, side: str, bucket: Bucket) -> TableKey:
        if not self.partitioned[etype]:
            return (etype, 0)
        return (etype, bucket[0] if side == "lhs" else bucket[1])

    def _tables(self, etype: str, side: str, bucket: Bucket | None = None) -> tuple[TableKey, torch.Tensor]:
        """A bucket's (default: the current one's) resident table for an entity type on a side (the scorer's
        table lookup)."""
        key = self._key(etype, side, self.bucket if bucket is None else bucket)
        return key, self.store.get(key).table

    def _rows_of(self, key: TableKey) -> int:
        return int(self.store.get(key).table.shape[0])

    def _steps_per_epoch(self) -> int:
        """Batches per epoch (the lr warm-up's length and the bar's total); with several relation groups a lower
        bound: each group's last batch of a chunk is partial (tbg/train/edge_stream.py)."""
        b = self.cfg.train_data.per_replica_batch_size
        return sum(-(-self.edges.count((i, j)) // b) for i in range(self.grid[0]) for j in range(self.grid[1]))

    # ------------------------------------------------------------------ step groups
    def run_group(
        self, worker: Worker, group: list[Batch], first_step: int, bucket: Bucket | None = None
    ) -> tuple[list[torch.Tensor], GroupChecks]:
        """Steps ``first_step``.. (1-based) of ``bucket`` (default: the current one) as one update: forward +
        backward of each micro-batch, then the summed gradients applied once (a group is
        ``gradient_accumulation`` batches, or fewer where it is cut at a checkpoint or the end of a bucket).
        Runs on a Hogwild worker or the calling thread.  Returns the losses and the group's finiteness checks
        (device tensors: nothing is read back here)."""
        bucket = self.bucket if bucket is None else bucket
        step_group = self._open_group(worker, first_step, first_step + len(group) - 1)
        tables = functools.partial(self._tables, bucket=bucket)
        losses = [self._score(step_group, batch, tables) for batch in group]
        updated = self._apply(step_group)
        values = torch.stack(losses + list(updated.values()))  # fp32 0-dim each: one stack
        return losses, GroupChecks(first_step, len(losses), list(updated), bucket, values)

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One batch on the calling thread (worker 0), outside :meth:`run`'s bookkeeping; parameters move every
        ``gradient_accumulation`` calls, as in a run."""
        if self._open is None:
            step = self.progress.step + 1
            self._open = self._open_group(self.workers[0], step, step)
        loss = self._score(self._open, batch)
        if self._open.batches >= (self.cfg.training.gradient_accumulation or 1):
            self.apply_updates()
        return loss

    def apply_updates(self) -> None:
        """Apply :meth:`train_step`'s pending gradients."""
        if self._open is not None:
            self._apply(self._open)
        self._open = None

    def _open_group(self, worker: Worker, first_step: int, last_step: int) -> StepGroup:
        worker.reseed(self.cfg.runtime.seed, first_step)
        return StepGroup(worker, last_step)

    def _score(self, group: StepGroup, batch: Batch, tables: Tables | None = None) -> torch.Tensor:
        """Forward + backward of one micro-batch of ``group`` (``tables``: the scorer's table lookup, default
        the current bucket's); its gradients wait in the group."""
        worker = group.worker
        result = worker.scorer.score(batch, tables or self._tables, self.cfg.train_data, worker.generator)
        group.gathered += result.gathered
        group.batches += 1
        return result.loss

    def _apply(self, group: StepGroup) -> dict[TableKey | str, torch.Tensor]:
        """Step the relation optimizer and the touched embedding rows with a group's gradients (coalesced per
        table, so an entity seen in several micro-batches gets one summed-gradient update); returns, per table
        updated, the :func:`finite_sum` of its rows' update (and of the relation parameters)."""
        lr_step = group.last_step - 1  # schedules count the steps completed before this one
        self.rel_opt.step(self.rel_lr.lr_at(lr_step), group.worker.params)
        params = [p for p in self.model.parameters() if p.numel()]
        updated: dict[TableKey | str, torch.Tensor] = {}
        if params:
            updated[RELATIONS] = finite_sum(torch.cat([p.data.view(-1) for p in params]))

        def needs_live(key: TableKey) -> bool:
            return self.store.get(key).optimizer.uses_live

        for key, (rows, grad, live) in coalesced_grads(group.gathered, needs_live, self._rows_of).items():
            res = self.store.get(key)
            delta = res.optimizer.step(rows, grad, self.table_lrs[key[0]].lr_at(lr_step), owned=True, live=live)
            res.dirty = True
            if delta is not None:
                updated[key] = finite_sum(delta)
        return updated

    # ------------------------------------------------------------------ checkpoint
    def committed(self) -> str:
        """What stays the latest checkpoint, for the non-finite error."""
        latest = self.ckpts.latest()
        if latest is None:
            return "no checkpoint was committed"
        return f"the latest checkpoint is still {latest.path}, step {latest.progress.get('step')}"

    def verify_finite(self, keys: list[TableKey] | None = None) -> None:
        """Raise NonFiniteError unless the steps so far, the resident tables ``keys`` (default: all) and the
        relation parameters are finite; called before a checkpoint or a swap file is written."""
        self.guard.check(self.committed)
        keys = list(self.store.resident) if keys is None else keys
        tables: dict[TableKey | str, list[torch.Tensor]] = {k: [self.store.get(k).table] for k in keys}
        tables[RELATIONS] = [p.detach() for p in self.model.parameters() if p.numel()]
        check_tables(tables, self.progress.step, self.committed)

    def checkpoint(self) -> str:
        self.apply_updates()
        return self.commit_version(self.cfg)

    def commit_version(self, cfg: Config, **record: Any) -> str:
        """Commit the next checkpoint version from the current state (finite-checked first), with ``cfg`` as
        its config.yaml and ``record`` added to progress.json; its path."""
        self.verify_finite()
        latest = self.ckpts.latest()
        try:
            writer = self.ckpts.begin(latest.version + 1 if latest is not None else 1)
            self.store.write_checkpoint(writer)
            writer.write_relations({k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()})
            write_state(writer, self.rel_opt)
            writer.write_file("config.yaml", dump_config(cfg))
            return writer.commit(
                self.progress.record(
                    finished=self.finished(),
                    model_fingerprint=self.fingerprint,
                    graph_import_id=self.graph.import_id,
                    **record,
                )
            )
        except BaseException:  # however far it got (a SIGTERM may land inside begin): this process holds the lock
            self.ckpts.remove_leftovers()
            raise

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        t, p = self.cfg.training, self.progress
        self.log.open_bar(min(t.num_train_steps, t.num_epochs * self._steps_per_epoch()), p.step)
        started = time.perf_counter()
        start_step, start_edges = p.step, p.edges_seen
        self._last_ckpt_step = -1
        try:
            with WorkerPool(self.workers, self.threads_per_worker) as pool:
                self._run_epochs(pool)
        finally:
            self.log.close_bar()
        wall = time.perf_counter() - started
        if p.step != self._last_ckpt_step:
            self.checkpoint()
        self.close()
        edges = p.edges_seen - start_edges
        return {
            "steps": p.step - start_step, "step": p.step, "epoch": p.epoch, "edges": edges,
            "wall_s": wall, "edges_per_s": edges / max(wall, 1e-9), "final_loss": self.log.last_loss,
            "val_loss": self.log.last_val_loss, "bf16": self.bf16, "device": str(self.device),
            "threads": torch.get_num_threads(), "hogwild_workers": len(self.workers),
            "memory": self.plan.summary(), "partition_io": self.store.stats.snapshot(), "epochs": self.swaps.epochs,
        }  # fmt: skip

    def close(self) -> None:
        """Stop the prefetch threads (after a run, or when one fails: no thread outlives it)."""
        try:
            self.store.close()
        finally:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def _run_epochs(self, pool: WorkerPool) -> None:
        p = self.progress
        while True:
            self._advance_cursor()  # (empty buckets hold nothing to train: what is resident stays)
            if self.grid != (1, 1):  # partitioned: an epoch record per epoch end (swaps, partition traffic)
                self.swaps.observe(p.epoch, lambda rec: self.log.write({"step": p.step, **rec}))
            if self.finished():
                return
            order, index = self._order(p.epoch), p.bucket_index
            self.bucket = order[index]
            buffer = self._buffer(p.epoch)
            self._units = buffer.keep(index, self._units | set(buffer.units[index]), self.slots)
            wanted = set(self.bucket_keys(self.bucket)).union(*(self.unit_keys(u) for u in self._units))
            self.verify_finite([k for k, r in self.store.resident.items() if r.dirty and k not in wanted])
            self.store.need(sorted(wanted))  # (evicted tables are written to swap files)
            if self.plan.budget is not None:
                runtime.trim_heap(above=self.plan.budget + memory.TRIM_ABOVE)
            self._prefetch_next(order, buffer, index)
            planned = self._dispatch_bucket(pool, self.bucket, p.position, p.step)
            # the epoch's next buckets whose partitions are all resident follow without draining the pool
            while planned < self.cfg.training.num_train_steps:
                index = self._next_index(order, index)
                if index is None or not set(buffer.units[index]) <= self._units:
                    break
                self.bucket = order[index]
                self._units = buffer.keep(index, self._units, self.slots)
                self._prefetch_next(order, buffer, index)
                planned = self._dispatch_bucket(pool, self.bucket, 0, planned)
            pool.drain()  # every step booked: the cursor is past these buckets (or the run is over)

    def _next_index(self, order: list[Bucket], index: int) -> int | None:
        """The next bucket of the epoch with edges to train, after ``index`` (None: the epoch ends)."""
        done = self.progress.done
        for nxt in range(index + 1, len(order)):
            if self.edges.count(order[nxt]) > 0 and list(order[nxt]) not in done:
                return nxt
        return None

    def _train_bucket(self, pool: WorkerPool) -> None:
        """The current bucket's batches from the saved position; returns with every group applied and booked."""
        self._dispatch_bucket(pool, self.bucket, self.progress.position, self.progress.step)
        pool.drain()

    def _dispatch_bucket(self, pool: WorkerPool, bucket: Bucket, start: int, planned: int) -> int:
        """``bucket``'s batches from edge ``start``, as step groups numbered after step ``planned``, handed to
        the pool (booked in order as they finish: the caller drains before it swaps tables); returns the last
        step dispatched.

        A group is cut where a checkpoint is due or ``num_train_steps`` ends the run, and the pool is drained
        after a group holding such a step or a validation step: a checkpoint then holds exactly the steps
        before its position, and validation sees no step in flight."""
        t, p = self.cfg.training, self.progress
        size = self.cfg.train_data.per_replica_batch_size
        accumulate = t.gradient_accumulation or 1
        group: list[tuple[int, Batch]] = []
        for chunk in self.edges.chunks(p.epoch, bucket, start):
            for position, batch in batches(chunk, size, start):
                interrupts.check()  # an interrupt a finalizer swallowed stops the run here (tbg/interrupts.py)
                group.append((position, batch))
                planned += 1
                last = planned >= t.num_train_steps
                if len(group) >= accumulate or planned % t.checkpoint_every_n == 0 or last:
                    self._dispatch(pool, group, planned, bucket)
                    group = []
                if last:
                    break
            if planned >= t.num_train_steps:
                break
        if group:
            self._dispatch(pool, group, planned, bucket)
        return planned

    def _dispatch(self, pool: WorkerPool, group: list[tuple[int, Batch]], last_step: int, bucket: Bucket) -> None:
        """Hand one step group to the pool; its steps are booked in order once it has run."""
        first = last_step - len(group) + 1
        sizes = [(position, len(batch)) for position, batch in group]
        work = [batch for _, batch in group]
        t = self.cfg.training
        barrier = any(
            step % t.checkpoint_every_n == 0 or step % t.eval_log_every_n == 0 or step >= t.num_train_steps
            for step in range(first, last_step + 1)
        )
        pool.dispatch(
            lambda worker: self.run_group(worker, work, first, bucket),
            lambda result: self._book(sizes, bucket, *result),
            barrier,
        )

    def _book(
        self, sizes: list[tuple[int, int]], bucket: Bucket, losses: list[torch.Tensor], checks: GroupChecks
    ) -> None:
        self.guard.add(checks)
        for (position, size), loss in zip(sizes, losses, strict=True):
            self._after_step(position, size, loss, bucket)

    def _after_step(self, position: int, size: int, loss: torch.Tensor, bucket: Bucket) -> None:
        """Bookkeeping after a batch: progress, logging, validation, periodic checkpoint."""
        t, p = self.cfg.training, self.progress
        p.step += 1
        p.position = position
        p.edges_seen += size
        self.log.step(loss, size)
        epoch = p.epoch  # the step's epoch, for its records
        if position >= self.edges.count(bucket):
            self._advance_cursor()  # so a checkpoint here says where to go on (or that the run finished)
        if p.step % t.train_log_every_n == 0 or self.finished():
            self.guard.check(self.committed)  # the record's read-back syncs anyway
            self.log.train(p.step, epoch, self.table_lrs[self.cfg.model.embeddings.tables[0].name].lr_at(p.step - 1))
        if p.step % t.eval_log_every_n == 0:
            self.guard.check(self.committed)
            record = self.validation.record(bucket, functools.partial(self._tables, bucket=bucket), p.step, epoch)
            if record is not None:
                self.log.validation(record)
        if p.step % t.checkpoint_every_n == 0:
            self.checkpoint()
            self._last_ckpt_step = p.step

    def _prefetch_next(self, order: list[Bucket], buffer: BufferSchedule, index: int) -> None:
        """Read the next partitions to load and the first edge chunk of the bucket after ``index`` in the
        background."""
        p = self.progress
        loads = buffer.next_loads(index, self._units)
        self.store.prefetch(sorted(set().union(*(self.unit_keys(u) for u in loads)) - set(self.store.resident)))
        if index + 1 < len(order):
            epoch, nxt = p.epoch, order[index + 1]
        elif p.epoch + 1 < self.cfg.training.num_epochs:
            epoch = p.epoch + 1
            nxt = self._order(epoch)[0]
        else:
            return
        self.edges.prefetch(epoch, nxt)

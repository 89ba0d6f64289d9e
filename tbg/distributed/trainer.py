"""One trainer of a distributed run: rounds of leased buckets, merged shared state, rank 0 commits.

An epoch runs in rounds.  In a round every trainer leases a bucket none of whose partitions another trainer
holds (leases.py), trains it to its end, writes its partitions back to the shared save_dir's swap dir
(temp + rename, checked finite) and gives the leases back; a trainer finding no free bucket sits the round
out.  Then, at a barrier, the shared state is merged (sync.py) and every trainer learns the same edge and
step totals and which buckets are done, so all agree when the epoch ends.  Rank 0 then commits a checkpoint
version (partition files hard-linked, relation parameters, progress.json with ``done``, ``epoch_edges``)
and the others wait for it before touching a partition again: every committed version is a consistent
state, a restart (``torchrun --max-restarts``) resumes from it and trains each bucket of the epoch exactly
once, and a lost trainer costs at most the round in flight.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs
import torch
import torch.distributed as dist

from tbg.config import Config
from tbg.distributed.env import DistEnv, DistributedError, connect_store
from tbg.distributed.leases import Coordinator
from tbg.distributed.partitions import COUNTS, SharedPartitions, lock_name
from tbg.distributed.sync import SharedState
from tbg.remote_save_dir import cache_dir, is_url, remote_of
from tbg.train.metrics_log import MetricsLog
from tbg.train.trainer import Bucket, Trainer
from tbg.train.workers import WorkerPool

NEVER = 1 << 62
LIVE_EDGES = "edges_live"  # edges trained in this attempt, added as they go (the bar)
REPORT_S = 0.5


def trainer_config(cfg: Config, env: DistEnv) -> Config:
    """The config one trainer runs with: its share of the host's CPUs, its own GPU, and no mid-bucket
    checkpoints or step limit (a distributed run commits and stops at round boundaries)."""
    from tbg.runtime import usable_cpus

    runtime = cfg.runtime
    if runtime.num_threads is None:
        local = max(1, int(__import__("os").environ.get("LOCAL_WORLD_SIZE", "1")))
        runtime = attrs.evolve(runtime, num_threads=max(1, usable_cpus() // local))
    if runtime.device in ("auto", "cuda") and torch.cuda.is_available():
        runtime = attrs.evolve(runtime, device=f"cuda:{env.local_rank % torch.cuda.device_count()}")
    save_dir = cache_dir(cfg.training.save_dir, env.rank) if is_url(cfg.training.save_dir) else cfg.training.save_dir
    training = attrs.evolve(cfg.training, checkpoint_every_n=NEVER, num_train_steps=NEVER, save_dir=save_dir)
    return attrs.evolve(cfg, runtime=runtime, training=training)


class DistributedTrainer(Trainer):
    def __init__(self, cfg: Config, env: DistEnv, coord: Coordinator, progress: bool = True) -> None:
        super().__init__(trainer_config(cfg, env), progress=False)
        self.slots = None  # a trainer holds its leased bucket's partitions only (partitions.py)
        self.user_cfg = cfg
        self.env = env
        self.coord = coord
        self.rank = env.rank
        self.log = MetricsLog(self.save_dir, self.device, show_bar=False, fields={"rank": env.rank})
        self.unpartitioned = [(t, 0) for t, split in self.partitioned.items() if not split]
        self.shared = SharedState(self.model, self.store, self.unpartitioned)
        self.show_bar = progress and env.rank == 0
        self.round = 0
        self.allreduce_bytes = 0
        self.buckets_trained = 0
        self._reported = (0, time.monotonic())
        self.remote = remote_of(cfg)  # a save_dir URL: work in a local cache (remote_save_dir.py)
        self.parts = SharedPartitions(self.store, coord, self.remote)
        self.epochs_io: list[dict[str, int]] = []  # every trainer's partition traffic per epoch (this attempt)
        self._published = dict(self.parts.counts)
        self._mid_epoch: str | None = None  # rank 0: the last round's version, if it did not end an epoch

    # ------------------------------------------------------------------ start
    def start(self, fresh: bool = False, allow_optimizer_change: bool = False) -> str:
        """Rank 0 prepares the save_dir and restores; the others then restore the same checkpoint."""
        import os
        import shutil

        from tbg.train.partition_store import SWAP_DIR

        if self.remote is not None:  # start from the remote state only: drop what an earlier run cached here
            for sub in (self.ckpts.root, os.path.join(self.save_dir, SWAP_DIR)):
                shutil.rmtree(sub, ignore_errors=True)
            if fresh and self.rank == 0:
                for rel in ("checkpoints", "partitions"):
                    if self.remote.fs.exists(f"{self.remote.root}/{rel}"):
                        self.remote.fs.rm(f"{self.remote.root}/{rel}", recursive=True)
            self.coord.barrier("cache-cleared")
            self.remote.pull_latest(self.save_dir)
        if self.rank == 0:
            if fresh:
                self.ckpts.remove_all()  # (refused while an eval or export reads one of them)
                shutil.rmtree(os.path.join(self.save_dir, SWAP_DIR), ignore_errors=True)
                self.log.clear()
            os.makedirs(self.save_dir, exist_ok=True)
            how = self._restore(allow_optimizer_change)
            if self.remote is not None:  # the shared partitions restart from this checkpoint's shards
                for key, path in self.store.sources.items():
                    self.remote.put(path, f"partitions/{lock_name(key)}.h5")
            self.log.cut_back(self.progress.step)  # the lost round's records (every rank's) go: no step twice
            self.coord.publish("started", how)
        else:
            self.coord.wait_value("started")
            how = self._restore(allow_optimizer_change)
            if self.remote is not None:  # (each rank's metrics.jsonl is in its own cache)
                self.log.cut_back(self.progress.step)
        Trainer._advance_cursor(self)
        if self.progress.position:
            raise DistributedError(
                f"the latest checkpoint in {self.save_dir} stops inside a bucket (position {self.progress.position});"
                " finish that bucket with one trainer (`tbg train`) or start over with --fresh"
            )
        self.coord.barrier("restored")
        return how

    def finished(self) -> bool:
        t, p = self.user_cfg.training, self.progress
        return p.epoch >= t.num_epochs or p.step >= t.num_train_steps

    def _advance_cursor(self) -> None:
        """Buckets are leased, not taken in order: the cursor is moved by the rounds."""

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        p = self.progress
        started = time.perf_counter()
        start_step, start_edges = p.step, p.edges_seen
        self.log.open_bar(1, 0)
        self.store.need(self.unpartitioned)
        self.shared.snapshot()
        self._reported = (p.edges_seen, time.monotonic())
        bar = ClusterBar(self) if self.show_bar else None
        try:
            with WorkerPool(self.workers, self.threads_per_worker) as pool:
                while not self.finished():
                    self._round(pool)
            self.parts.finish()
        finally:
            if bar is not None:
                bar.close()
            self.log.close_bar()
        wall = time.perf_counter() - started
        self.executor.shutdown(wait=True)
        edges = p.edges_seen - start_edges
        return {
            "steps": p.step - start_step, "step": p.step, "epoch": p.epoch, "edges": edges,
            "wall_s": wall, "edges_per_s": edges / max(wall, 1e-9), "final_loss": self.log.last_loss,
            "val_loss": self.log.last_val_loss, "bf16": self.bf16, "device": str(self.device),
            "threads": torch.get_num_threads(), "hogwild_workers": len(self.workers),
            "rank": self.rank, "world_size": self.env.world_size, "rounds": self.round,
            "buckets": self.buckets_trained,
            "bytes_moved": {**self.parts.bytes, "allreduce": self.allreduce_bytes},
            "partition_io": dict(self.parts.counts), "epochs_io": list(self.epochs_io),
            "remote_bytes": dict(self.remote.moved) if self.remote is not None else None,
        }  # fmt: skip

    def _round(self, pool: WorkerPool) -> None:
        p = self.progress
        base_step, base_edges = p.step, p.edges_seen
        order = self._order(p.epoch)
        todo = [b for b in order if self.edges.count(b) > 0 and list(b) not in p.done]
        candidates = self._candidates(todo)
        bucket = self.coord.claim(p.epoch, candidates)
        if bucket is not None:
            self._train_leased(pool, bucket, [b for b, _ in candidates])
        for name, count in self.parts.counts.items():  # the epoch's totals over every trainer (the --json summary)
            if count != self._published[name]:
                self.coord.add(f"e{p.epoch}/io/{name}", count - self._published[name])
        self._published = dict(self.parts.counts)
        self.coord.barrier(f"r{self.round}/trained", deadline_s=NEVER)
        mine = (p.edges_seen - base_edges, p.step - base_step)
        self.allreduce_bytes += self.shared.bytes_per_round
        all_edges, all_steps = self.shared.merge(*mine, self.device)
        p.edges_seen, p.step = base_edges + all_edges, base_step + all_steps
        self._reported = (p.edges_seen, time.monotonic())
        p.position = 0
        p.done += [list(b) for b in self.coord.claimed(p.epoch, todo)]
        if len(p.done) == sum(1 for b in order if self.edges.count(b) > 0):
            self.epochs_io.append({"epoch": p.epoch, **{c: self.coord.add(f"e{p.epoch}/io/{c}", 0) for c in COUNTS}})
            p.next_epoch()
            p.bucket_index = 0
        epoch_ended = not p.done
        if self.rank == 0 and (self.remote is None or epoch_ended or self.finished()):
            self._commit_round(epoch_ended)  # (object storage: only at epoch ends, tbg/remote_save_dir.py)
        self.coord.barrier(f"r{self.round}/committed")
        self.round += 1

    def _candidates(self, todo: list[Bucket]) -> list[tuple[Bucket, list[str]]]:
        """The epoch's remaining buckets, each rank starting at its own offset (fewer lost claim races), those
        sharing a partition this trainer kept from its last bucket first."""
        if todo:
            shift = self.rank * len(todo) // self.env.world_size
            todo = todo[shift:] + todo[:shift]
            todo.sort(key=self._affinity)
        return [(b, [lock_name(k) for k in self._partition_keys(b)]) for b in todo]

    def _affinity(self, bucket: Bucket) -> tuple[bool, bool]:
        """Sort key: buckets sharing a kept partition first, among them those whose others are read ahead."""
        keys = self._partition_keys(bucket)
        have = [k in self.store.resident or self.store.reading(k) for k in keys]
        return not any(k in self.store.resident for k in keys), not all(have)

    def _partition_keys(self, bucket: Bucket) -> list[tuple[str, int]]:
        return [k for k in self.bucket_keys(bucket) if self.partitioned[k[0]]]

    def _train_leased(self, pool: WorkerPool, bucket: Bucket, todo: list[Bucket]) -> None:
        """Train a leased bucket to its end, commit its partitions to the swap dir (they stay resident, clean),
        give the leases back; the likely next lease's partitions are read meanwhile (partitions.py)."""
        self.bucket = bucket
        keys = self._partition_keys(bucket)
        self.parts.lease(keys)
        self.store.need(sorted(set(self.bucket_keys(bucket)) | set(self.unpartitioned)))
        self.parts.read_ahead(self._next_keys(bucket, todo))
        self.progress.position = 0
        self._train_bucket(pool)
        self.verify_finite(keys)  # nothing non-finite reaches the shared files
        self.store.write_back(keys, keep=True)
        self.parts.written(keys)
        self.coord.release([lock_name(k) for k in keys])
        self.buckets_trained += 1
        self._report_edges(force=True)

    def _next_keys(self, bucket: Bucket, todo: list[Bucket]) -> list[tuple[str, int]]:
        """The partitions, besides this bucket's, of the likely next lease: the first remaining bucket sharing
        a partition with ``bucket`` (it is kept), else the first remaining one."""
        mine = set(self._partition_keys(bucket))
        rest = [b for b in todo if b != bucket]
        rest.sort(key=lambda b: not mine & set(self._partition_keys(b)))
        for b in rest:
            others = [k for k in self._partition_keys(b) if k not in mine]
            if others:
                return others
        return []

    def _after_step(self, position: int, size: int, loss: torch.Tensor, bucket: Bucket) -> None:
        super()._after_step(position, size, loss, bucket)
        self.coord.tick()
        self._report_edges()

    def _report_edges(self, force: bool = False) -> None:
        """Add this trainer's newly trained edges to the store's live counter (at most every REPORT_S)."""
        edges, when = self._reported
        now = time.monotonic()
        if force or now - when >= REPORT_S:
            self.coord.add(LIVE_EDGES, self.progress.edges_seen - edges)
            self._reported = (self.progress.edges_seen, now)

    # ------------------------------------------------------------------ checkpoint
    def _commit_round(self, epoch_ended: bool) -> None:
        """Commit the round; the previous round's version goes unless it ended an epoch (the versions kept are
        the epochs' ends and the latest; ``checkpoint_max_to_keep`` prunes those)."""
        path = self.checkpoint()
        if self.remote is not None and (epoch_ended or self.finished()):
            self.remote.push_version(path)  # (object storage: versions at epoch ends, docs/distributed.md)
        if self._mid_epoch is not None:
            self.ckpts.remove(self._mid_epoch)  # (kept while a reader pins it; pruning takes it later)
        self._mid_epoch = None if epoch_ended else path

    def checkpoint(self) -> str:
        """Rank 0 commits the merged state; partition files come from the shared swap dir."""
        self.parts.current([k for k in self.store.keys if self.partitioned[k[0]]])  # (kept copies: still current?)
        return self.commit_version(self.user_cfg, world_size=self.env.world_size)


class ClusterBar:
    """Rank 0's tqdm bar over every trainer's edges (the store's live counter, polled on a thread)."""

    def __init__(self, trainer: DistributedTrainer) -> None:
        from tqdm import tqdm

        cfg = trainer.user_cfg
        self.total = cfg.training.num_epochs * trainer.graph.num_edges("train")
        self.base = trainer.progress.edges_seen
        self.key = trainer.coord.key(LIVE_EDGES)
        self.store = connect_store(trainer.env, trainer.coord.timeout_s)
        self.bar = tqdm(total=self.total, initial=min(self.total, self.base), unit="edge", unit_scale=True,
                        dynamic_ncols=True, desc=f"{trainer.env.world_size} trainers")  # fmt: skip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="tbg-bar", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        shown = self.base
        while not self._stop.wait(REPORT_S):
            try:
                done = self.base + int(self.store.add(self.key, 0))
            except (RuntimeError, OSError):
                return
            self.bar.update(min(done, self.total) - shown)
            shown = min(done, self.total)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.bar.close()


def init_process_group(env: DistEnv, device: torch.device, timeout_s: float) -> None:
    """The collective group for the shared state (gloo on CPU, nccl on GPU) over the agent's store, its keys
    under this attempt's prefix (the agent's store outlives a restart: the lost attempt's keys stay there)."""
    from datetime import timedelta

    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        store = dist.PrefixStore(f"tbg/{env.run_id}/a{env.attempt}/pg", connect_store(env, timeout_s))
        dist.init_process_group(
            backend, store=store, rank=env.rank, world_size=env.world_size, timeout=timedelta(seconds=timeout_s)
        )
    except (RuntimeError, OSError, ValueError) as exc:
        problem = " ".join(str(exc).split())[:200]
        raise DistributedError(f"rank {env.rank}: cannot form the {backend} group: {problem}") from None

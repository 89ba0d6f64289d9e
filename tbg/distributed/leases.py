"""Bucket leases, heartbeats and waits in the launcher's c10d store (env.py): how trainers share an epoch.

Keys live under ``tbg/<run id>/a<attempt>/``: a restart of the group (``torchrun --max-restarts``) starts
from committed state with fresh keys, so nothing a lost attempt left in the store (its leases, its counters)
can block or confuse the next one; the leases of a lost attempt expire with it.

- **Claims.** A bucket is taken with ``compare_set`` on each of its partitions' lock keys (sorted, so two
  claimers cannot deadlock; a failed claim gives back what it took) and then on the bucket's own key, which
  stays set for the rest of the epoch: no bucket is trained twice in an epoch, and no two trainers hold a
  partition at once.  Unpartitioned tables are not leased (every bucket uses them; tbg/distributed/sync.py).
- **Heartbeats.** A thread adds 1 to ``hb/<rank>`` every ``heartbeat_s`` while the trainer's main thread is
  making progress (it calls :meth:`Coordinator.tick` per step and while waiting).  A peer whose counter has
  not moved for ``timeout_s`` (measured on the waiter's own clock: no clock skew), or whose process is gone
  (same host), is lost: every wait checks, and raises a :class:`DistributedError` naming it.
- **Waits.** :meth:`Coordinator.barrier` polls a counter; it never blocks in the store, so it can notice a
  lost peer, a peer that failed (``failed`` key, set by :meth:`Coordinator.fail`) or its own deadline.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable

from tbg.distributed.env import DistEnv, DistributedError, connect_store
from tbg.processes import process_gone

POLL_S = 0.05
FREE = ""


class Coordinator:
    def __init__(self, env: DistEnv, timeout_s: float, heartbeat_s: float) -> None:
        self.env = env
        self.rank = env.rank
        self.world = env.world_size
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.prefix = f"tbg/{env.run_id}/a{env.attempt}/"
        self.store = connect_store(env, timeout_s)
        self._beat_store = connect_store(env, timeout_s)  # the heartbeat thread's own connection
        self._ticked = time.monotonic()
        self._stop = threading.Event()
        self._seen: dict[int, tuple[int, float]] = {}  # peer -> (heartbeat count, when it last moved)
        self._who: dict[int, str] = {}
        self._claims = 0
        self.store.set(self.key(f"who/{self.rank}"), f"{socket.gethostname()}:{os.getpid()}")
        self._beat()
        self._thread = threading.Thread(target=self._heartbeats, name="tbg-heartbeat", daemon=True)
        self._thread.start()

    def key(self, name: str) -> str:
        return self.prefix + name

    # ------------------------------------------------------------------ liveness
    def tick(self) -> None:
        """The main thread is alive (called per step and while waiting)."""
        self._ticked = time.monotonic()

    def _beat(self) -> None:
        self._beat_store.add(self.key(f"hb/{self.rank}"), 1)

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if time.monotonic() - self._ticked > self.timeout_s:
                continue  # a stuck main thread stops beating, so its peers give up on it
            try:
                self._beat()
            except (RuntimeError, OSError):
                return  # the store is gone; the main thread finds out at its next store call

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.heartbeat_s + 1)

    def fail(self, message: str) -> None:
        """Tell the peers this trainer stops (the first failure is kept); never raises."""
        try:
            self.store.compare_set(self.key("failed"), FREE, f"rank {self.rank} failed: {message}"[:400])
        except (RuntimeError, OSError):
            pass

    def check_peers(self) -> None:
        """Raise DistributedError when a peer failed or is lost."""
        failed = self._get("failed")
        if failed and not failed.startswith(f"rank {self.rank} "):
            raise DistributedError(f"rank {self.rank}: stopping because {failed}")
        now = time.monotonic()
        for peer in range(self.world):
            if peer == self.rank:
                continue
            count = self._counter(f"hb/{peer}")
            last = self._seen.get(peer)
            if last is None or count != last[0]:
                self._seen[peer] = (count, now)
                continue
            quiet = now - last[1]
            if quiet > self.timeout_s or (quiet > 2 * self.heartbeat_s + 1 and self._process_gone(peer)):
                raise DistributedError(
                    f"rank {self.rank}: lost rank {peer} ({self._where(peer)}): no heartbeat for {quiet:.0f} s"
                    f" (timeout {self.timeout_s:g} s); committed state is kept"
                )

    def lost_peer(self) -> str | None:
        """A one-line description of a lost or failed peer, if one is known now (e.g. after SIGTERM)."""
        try:
            self.check_peers()
            for peer in range(self.world):
                if peer != self.rank and self._process_gone(peer):
                    return f"rank {self.rank}: lost rank {peer} ({self._where(peer)}): its process is gone"
        except DistributedError as exc:
            return str(exc)
        except (RuntimeError, OSError):
            return None
        return None

    def _where(self, peer: int) -> str:
        if peer not in self._who:
            self._who[peer] = self._get(f"who/{peer}") or "?"
        host, _, pid = self._who[peer].rpartition(":")
        return f"pid {pid} on {host}"

    def _process_gone(self, peer: int) -> bool:
        self._where(peer)
        host, _, pid = self._who.get(peer, "").rpartition(":")
        return host == socket.gethostname() and pid.isdigit() and process_gone(int(pid))

    # ------------------------------------------------------------------ store access
    def _get(self, name: str) -> str:
        key = self.key(name)
        try:
            if not self.store.check([key]):
                return ""
            return self.store.get(key).decode()
        except (RuntimeError, OSError) as exc:
            raise self._store_lost(exc) from None

    def _counter(self, name: str, add: int = 0) -> int:
        try:
            return int(self.store.add(self.key(name), add))
        except (RuntimeError, OSError) as exc:
            raise self._store_lost(exc) from None

    def add(self, name: str, amount: int) -> int:
        return self._counter(name, amount)

    def _store_lost(self, exc: BaseException) -> DistributedError:
        problem = " ".join(str(exc).split())[:160]
        env = self.env
        return DistributedError(
            f"rank {self.rank}: lost the torchrun store at {env.master_addr}:{env.master_port} ({problem})"
        )

    def _swap(self, name: str, expected: str, desired: str) -> bool:
        try:
            return self.store.compare_set(self.key(name), expected, desired).decode() == desired
        except (RuntimeError, OSError) as exc:
            raise self._store_lost(exc) from None

    # ------------------------------------------------------------------ waits
    def barrier(self, name: str, deadline_s: float | None = None) -> None:
        """Wait until every trainer reached ``name`` (each name once per attempt), checking the peers as it
        polls; ``deadline_s`` (default ``timeout_s``) bounds the wait even when every peer still beats."""
        self._counter(f"bar/{name}", 1)
        limit = time.monotonic() + (self.timeout_s if deadline_s is None else deadline_s)
        while self._counter(f"bar/{name}") < self.world:
            self.tick()
            self.check_peers()
            if time.monotonic() > limit:
                raise DistributedError(
                    f"rank {self.rank}: waited {deadline_s or self.timeout_s:g} s at {name!r} for the other trainers"
                )
            time.sleep(POLL_S)

    def publish(self, name: str, value: str) -> None:
        self.store.set(self.key(name), value)

    def value(self, name: str) -> str:
        """A published value, or "" when there is none."""
        return self._get(name)

    def wait_value(self, name: str) -> str:
        """A value another trainer publishes (polled; lost peers and the timeout end the wait)."""
        limit = time.monotonic() + self.timeout_s
        while True:
            value = self._get(name)
            if value:
                return value
            self.tick()
            self.check_peers()
            if time.monotonic() > limit:
                raise DistributedError(f"rank {self.rank}: waited {self.timeout_s:g} s for {name!r}")
            time.sleep(POLL_S)

    # ------------------------------------------------------------------ leases
    def claim(self, epoch: int, candidates: Iterable[tuple[tuple[int, int], list[str]]]) -> tuple[int, int] | None:
        """The first candidate bucket (with its partition lock names) this trainer could lease, else None."""
        for bucket, locks in candidates:
            bucket_key = f"e{epoch}/b{bucket[0]}_{bucket[1]}"
            if self._get(bucket_key):
                continue  # trained (or being trained) this epoch
            self._claims += 1
            token = f"r{self.rank}:{self._claims}"
            taken: list[str] = []
            for lock in sorted(set(locks)):
                if not self._swap(f"lock/{lock}", FREE, token):
                    break
                taken.append(lock)
            else:
                if self._swap(bucket_key, FREE, token):
                    return bucket
            self.release(taken, token)
        return None

    def release(self, locks: Iterable[str], token: str | None = None) -> None:
        """Give back partition locks (after the partitions were committed)."""
        for lock in locks:
            current = self._get(f"lock/{lock}")
            if current and (token is None or current == token) and current.startswith(f"r{self.rank}:"):
                self._swap(f"lock/{lock}", current, FREE)

    def held(self, lock: str) -> bool:
        """Whether another trainer holds the partition lock ``lock`` now."""
        current = self._get(f"lock/{lock}")
        return bool(current) and not current.startswith(f"r{self.rank}:")

    def claimed(self, epoch: int, buckets: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """Which of ``buckets`` were claimed this epoch (after a barrier: trained and committed)."""
        return [b for b in buckets if self._get(f"e{epoch}/b{b[0]}_{b[1]}")]

"""Bucket orders: every (lhs partition, rhs partition) bucket exactly once per epoch, seeded per epoch.

- ``buffer`` (default): planned for the partition buffer (tbg/train/partition_buffer.py), in the spirit of
  Marius's BETA ordering: with ``slots`` partition indices resident, train every bucket they allow, then swap
  one index for the one that opens the most new buckets (anchors stay while they have work, the rest cycle
  through).  With a bucket's own two (no budget) each swap opens one new partition pair, PBG's best.
- As in PBG (``bucket_scheduling.py``): ``random``, a shuffle of all pairs; ``affinity``, start at a random
  bucket, next the transpose if left, else a random remaining bucket sharing a partition with the current
  one, else any remaining one; ``inside_out``, L-shaped layers ``min(l, r) == k``, highest k first, chained
  so that each layer starts next to where the previous one ended.  With a *shared* grid (the lhs and rhs
  partitions of index i are the same tables, e.g. one entity type) each bucket sits next to its transpose,
  the pairs are shuffled but a layer's first pair keeps a resident partition; otherwise each layer is walked
  as a path along its column then its row, in alternating directions.

Swaps (partition indices made resident) and their lower bound are counted in tbg/train/partition_buffer.py;
``inside_out`` and ``buffer`` meet the bound with a bucket's own partitions resident.
"""

from __future__ import annotations

import random

import numpy as np

Bucket = tuple[int, int]


def _rng(seed: int, epoch: int) -> random.Random:
    return random.Random(seed * 1_000_003 + epoch)


def _random(pl: int, pr: int, rng: random.Random, shared: bool) -> list[Bucket]:
    out = [(i, j) for i in range(pl) for j in range(pr)]
    rng.shuffle(out)
    return out


def _layers_shared(p: int, rng: random.Random) -> list[Bucket]:
    out: list[Bucket] = []
    resident: set[int] = set()
    for k in reversed(range(p)):
        pairs = [[(k, j), (j, k)] for j in range(k + 1, p)]
        for pair in pairs:
            rng.shuffle(pair)
        rng.shuffle(pairs)
        first = [i for i, pair in enumerate(pairs) if pair[0][1 if pair[0][0] == k else 0] in resident]
        groups: list[list[Bucket]] = []
        if first:  # a pair with a resident partition opens the layer (one load: k)
            groups.append(pairs.pop(rng.choice(first)))
        rest = [*pairs, [(k, k)]]
        rng.shuffle(rest)
        groups += rest
        out += [b for g in groups for b in g]
        resident = set(out[-1])
    return out


def _layers_path(pl: int, pr: int, rng: random.Random) -> list[Bucket]:
    out: list[Bucket] = []
    forward = rng.random() < 0.5
    for k in reversed(range(min(pl, pr))):
        path = [(i, k) for i in reversed(range(k + 1, pl))] + [(k, k)] + [(k, j) for j in range(k + 1, pr)]
        out += path if forward else path[::-1]
        forward = not forward
    return out


def _layers(pl: int, pr: int, rng: random.Random, shared: bool) -> list[Bucket]:
    if shared and pl == pr:
        return _layers_shared(pl, rng)
    return _layers_path(pl, pr, rng)


def _affinity(pl: int, pr: int, rng: random.Random, shared: bool) -> list[Bucket]:
    remaining = {(i, j) for i in range(pl) for j in range(pr)}
    current = rng.choice(sorted(remaining))
    out = [current]
    remaining.discard(current)
    while remaining:
        i, j = current
        if (j, i) in remaining:
            current = (j, i)
        else:
            sharing = sorted(b for b in remaining if b[0] == i or b[1] == j)
            current = rng.choice(sharing) if sharing else rng.choice(sorted(remaining))
        out.append(current)
        remaining.discard(current)
    return out


def _buffered(pl: int, pr: int, rng: random.Random, shared: bool, slots: int | None = None) -> list[Bucket]:
    """Greedy buffer-aware order (Marius's BETA ordering, generalised): train every bucket the resident units
    allow, then make the swap that opens the most new buckets.  Ties keep the units with the most work left
    resident (the BETA shape: anchors stay until their buckets are done, the others cycle through), then
    load the unit with the most work, then the seeded generator decides.  Off a shared grid the side with
    fewer partitions holds ``slots - 1`` anchors and the other side cycles through the rest."""
    shared = shared and pl == pr
    counts = [pl, 1 if shared else pr]
    sides = [s for s in (0, 1) if counts[s] > 1]
    c = max(2 if shared or len(sides) == 2 else 1, slots or 0)  # at least a bucket's own units
    quota = [0, 0]
    if len(sides) == 2:
        anchor = 0 if pl <= pr else 1
        quota[anchor] = min(c - 1, counts[anchor])
        quota[1 - anchor] = c - quota[anchor]
    elif sides:
        quota[sides[0]] = c
    left = np.ones((pl, pr), dtype=bool)
    resident: list[list[int]] = [[] if counts[s] > 1 else [0] for s in (0, 1)]
    out: list[Bucket] = []
    scale = 4 * max(pl, pr) + 2
    noise = np.random.default_rng(rng.getrandbits(63))

    def rhs(kept: list[list[int]]) -> list[int]:
        return kept[0] if shared else kept[1]

    def emit() -> None:
        cells = [(i, j) for i in sorted(resident[0]) for j in sorted(rhs(resident)) if left[i, j]]
        rng.shuffle(cells)
        for i, j in cells:
            left[i, j] = False
        out.extend(cells)

    emit()  # (a side with one partition is always resident)
    while left.any():
        work = [left.sum(1) + (left.sum(0) if shared else 0), left.sum(0)]  # buckets left per unit
        best: tuple[float, int, int, int | None] | None = None
        for side in sides:
            full = len(resident[side]) >= quota[side]
            for evict in resident[side] if full else [None]:
                kept = [[u for u in resident[s] if not (s == side and u == evict)] for s in (0, 1)]
                if shared:
                    gain = left[:, kept[0]].sum(1) + left[kept[0], :].sum(0) + np.diagonal(left)
                elif side == 0:
                    gain = left[:, kept[1]].sum(1)
                else:
                    gain = left[kept[0], :].sum(0)
                done = evict is None or work[side][evict] == 0  # a free slot, or a unit with no work left
                keep = scale - 1 if done else int(work[side][evict])
                total = (gain * scale + keep) * scale + work[side] + noise.random(len(gain))
                total[resident[side]] = -1.0
                n = int(np.argmax(total))
                if total[n] >= 0 and (best is None or total[n] > best[0]):
                    best = (float(total[n]), side, n, evict)
        assert best is not None
        _, side, n, evict = best
        if evict is not None:
            resident[side].remove(evict)
        resident[side].append(n)
        emit()
    return out


ORDERS = {"random": _random, "inside_out": _layers, "affinity": _affinity, "buffer": _buffered}


def bucket_order(
    num_lhs: int, num_rhs: int, order: str, seed: int, epoch: int, *, shared: bool = True, slots: int | None = None
) -> list[Bucket]:
    """The buckets of ``epoch`` in ``order`` (deterministic for a given seed, epoch and slots, so resume agrees).

    ``shared``: index i names the same partitions on both sides (see the module doc); ``slots``: the units
    the partition buffer holds (tbg/train/partition_buffer.py; None: a bucket's own), which only ``buffer``
    plans for."""
    try:
        make = ORDERS[str(order)]
    except KeyError:
        raise ValueError(f"unknown bucket order {order!r} (choices: {', '.join(ORDERS)})") from None
    if make is _buffered:
        return _buffered(num_lhs, num_rhs, _rng(seed, epoch), shared, slots)
    return make(num_lhs, num_rhs, _rng(seed, epoch), shared)

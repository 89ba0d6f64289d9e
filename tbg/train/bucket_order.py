"""Bucket orders: every (lhs partition, rhs partition) bucket exactly once per epoch, seeded per epoch.

As in PBG (``bucket_scheduling.py``):
- ``random``: a shuffle of all pairs;
- ``affinity``: start at a random bucket; next the transpose if left, else a random remaining bucket
  sharing a partition with the current one (so one partition stays resident), else any remaining one;
- ``inside_out`` (default): L-shaped layers ``min(l, r) == k``, highest k first, chained so that each layer
  starts next to where the previous one ended.  With a *shared* grid (the lhs and rhs partitions of index i
  are the same tables, e.g. one entity type) each bucket sits next to its transpose, the pairs are shuffled
  but a layer's first pair keeps a resident partition; otherwise each layer is walked as a path along its
  column then its row, in alternating directions.

A *swap* is a partition index made resident (shared grid: an index entering the set of the bucket's two
indices; otherwise an lhs or rhs index change; sides with one partition never swap).  ``swaps`` counts them
for an order and ``swap_lower_bound`` is the fewest any order can have, when only the bucket's own
partitions are resident; ``inside_out`` meets it on the first epoch (later epochs: within 2).
"""

from __future__ import annotations

import random

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


ORDERS = {"random": _random, "inside_out": _layers, "affinity": _affinity}


def bucket_order(num_lhs: int, num_rhs: int, order: str, seed: int, epoch: int, *, shared: bool = True) -> list[Bucket]:
    """The buckets of ``epoch`` in ``order`` (deterministic for a given seed and epoch, so resume agrees).

    ``shared``: index i names the same partitions on both sides (see the module doc)."""
    try:
        make = ORDERS[str(order)]
    except KeyError:
        raise ValueError(f"unknown bucket order {order!r} (choices: {', '.join(ORDERS)})") from None
    return make(num_lhs, num_rhs, _rng(seed, epoch), shared)


def swaps(order: list[Bucket], num_lhs: int, num_rhs: int, shared: bool, start: Bucket | None = None) -> int:
    """Partition indices made resident along ``order``, from the bucket ``start`` (None: nothing resident)."""
    count = 0
    prev = start
    for bucket in order:
        if shared and num_lhs == num_rhs:
            if num_lhs > 1:
                count += len(set(bucket) - (set(prev) if prev is not None else set()))
        else:
            count += sum(
                1 for side, n in ((0, num_lhs), (1, num_rhs)) if n > 1 and (prev is None or prev[side] != bucket[side])
            )
        prev = bucket
    return count


def swap_lower_bound(num_lhs: int, num_rhs: int, shared: bool, first_epoch: bool = True) -> int:
    """The fewest swaps of any order of one epoch (``first_epoch``: nothing resident at its start).

    Shared grid of P: two resident indices cover one unordered pair {a, b} (with both diagonals), each later
    swap at most one new pair, so ``P(P-1)/2 + 1`` from nothing and ``P(P-1)/2 - 1`` from a resident pair.
    Otherwise each swap makes at most one new bucket trainable: ``cells + 1`` from nothing (``cells`` with
    one side unpartitioned), ``cells - 1`` from a resident bucket."""
    if shared and num_lhs == num_rhs:
        p = num_lhs
        if p <= 1:
            return 0
        pairs = p * (p - 1) // 2
        return pairs + 1 if first_epoch else max(0, pairs - 1)
    cells = num_lhs * num_rhs
    sides = (num_lhs > 1) + (num_rhs > 1)
    if sides == 0:
        return 0
    first = cells + 1 if sides == 2 else cells
    return first if first_epoch else cells - 1

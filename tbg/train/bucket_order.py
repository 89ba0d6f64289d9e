"""Bucket orders: every (lhs partition, rhs partition) bucket exactly once per epoch, seeded per epoch.

As in PBG (``bucket_scheduling.py``):
- ``random``: a shuffle of all pairs;
- ``affinity``: start at a random bucket; next the transpose if left, else a random remaining bucket
  sharing a partition with the current one (so one partition stays resident), else any remaining one;
- ``inside_out`` (default): L-shaped layers ``min(l, r) == k``, highest k first; inside a layer each bucket
  sits next to its transpose and the pairs are shuffled.
"""

from __future__ import annotations

import random


def _rng(seed: int, epoch: int) -> random.Random:
    return random.Random(seed * 1_000_003 + epoch)


def _random(pl: int, pr: int, rng: random.Random) -> list[tuple[int, int]]:
    out = [(i, j) for i in range(pl) for j in range(pr)]
    rng.shuffle(out)
    return out


def _layers(pl: int, pr: int, rng: random.Random) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for k in reversed(range(min(pl, pr))):
        members = {(i, j) for i in range(pl) for j in range(pr) if min(i, j) == k}
        groups: list[list[tuple[int, int]]] = []
        for i, j in sorted(members):
            if (i, j) not in members:
                continue
            members.discard((i, j))
            pair = [(i, j)]
            if (j, i) in members:
                members.discard((j, i))
                pair.append((j, i))
            rng.shuffle(pair)
            groups.append(pair)
        rng.shuffle(groups)
        out += [b for g in groups for b in g]
    return out


def _affinity(pl: int, pr: int, rng: random.Random) -> list[tuple[int, int]]:
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


def bucket_order(num_lhs: int, num_rhs: int, order: str, seed: int, epoch: int) -> list[tuple[int, int]]:
    """The buckets of ``epoch`` in ``order`` (deterministic for a given seed and epoch, so resume agrees)."""
    try:
        make = ORDERS[str(order)]
    except KeyError:
        raise ValueError(f"unknown bucket order {order!r} (choices: {', '.join(ORDERS)})") from None
    return make(num_lhs, num_rhs, _rng(seed, epoch))

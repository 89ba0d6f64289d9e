"""Rank and metric math on per-query counts (numpy only, no torch).

A query's candidates are compared with the true entity's score ``s``; the engine returns, per query,
``greater`` (#candidates scoring > s), ``equal`` (#candidates scoring == s, the true entity itself excluded)
and ``num_candidates`` (negatives actually ranked against, i.e. after filtering).  From these:

- optimistic rank  = 1 + greater                    (the truth wins every tie)
- pessimistic rank = 1 + greater + equal            (the truth loses every tie; PBG's ``>=`` rank)
- realistic rank   = (optimistic + pessimistic) / 2 (the expected rank over random tie orders; PyKEEN)
- AUC              = (#lower + equal / 2) / num_candidates, the fraction of negatives ranked below the truth

The rank distribution is kept as a histogram of realistic ranks in log-spaced (power-of-two) bins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

RANK_KINDS = ("realistic", "optimistic", "pessimistic")


@dataclass
class SideCounts:
    """Per-query counts of one target side (rows aligned with the eval edges)."""

    greater: np.ndarray  # int64 [E]
    equal: np.ndarray  # int64 [E]
    num_candidates: np.ndarray  # int64 [E], negatives after filtering

    def ranks(self, kind: str = "realistic") -> np.ndarray:
        opt = 1.0 + self.greater.astype(np.float64)
        if kind == "optimistic":
            return opt
        pess = opt + self.equal
        if kind == "pessimistic":
            return pess
        if kind == "realistic":
            return (opt + pess) / 2.0
        raise ValueError(f"unknown rank kind {kind!r} (choices: {', '.join(RANK_KINDS)})")

    def auc(self) -> np.ndarray:
        n = self.num_candidates.astype(np.float64)
        lower = n - self.greater - self.equal
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (lower + 0.5 * self.equal) / n
        return np.where(n > 0, out, 1.0)  # no negative at all: nothing outranks the truth

    def take(self, mask: np.ndarray) -> SideCounts:
        return SideCounts(self.greater[mask], self.equal[mask], self.num_candidates[mask])

    @staticmethod
    def concat(parts: Sequence[SideCounts]) -> SideCounts:
        return SideCounts(
            np.concatenate([p.greater for p in parts]),
            np.concatenate([p.equal for p in parts]),
            np.concatenate([p.num_candidates for p in parts]),
        )


def rank_metrics(ranks: np.ndarray, hits_at: Iterable[int]) -> dict[str, float]:
    """MRR, mean rank and Hits@k of a rank array (NaN when empty)."""
    if ranks.size == 0:
        return {"mrr": float("nan"), "mean_rank": float("nan"), **{f"hits@{k}": float("nan") for k in hits_at}}
    out = {"mrr": float(np.mean(1.0 / ranks)), "mean_rank": float(np.mean(ranks))}
    for k in hits_at:
        out[f"hits@{k}"] = float(np.mean(ranks <= k))
    return out


def rank_histogram(ranks: np.ndarray) -> dict[str, list[int]]:
    """Counts of ranks in bins [1, 2), [2, 4), [4, 8), ...: ``edges`` has one more entry than ``counts``.

    The bin of a rank r >= 1 is floor(log2 r), read exactly from the float's exponent (no log rounding).
    """
    if ranks.size == 0:
        return {"edges": [1], "counts": []}
    counts = np.bincount(np.frexp(ranks)[1] - 1)
    return {"edges": [1 << k for k in range(counts.size + 1)], "counts": counts.tolist()}


def side_metrics(counts: SideCounts, hits_at: Sequence[int]) -> dict[str, object]:
    """Headline (realistic) metrics plus optimistic/pessimistic variants, AUC and the realistic rank
    histogram for one group of queries."""
    out: dict[str, object] = {"count": int(counts.greater.size)}
    ranks = counts.ranks("realistic")
    out.update(rank_metrics(ranks, hits_at))
    out["auc"] = float(np.mean(counts.auc())) if counts.greater.size else float("nan")
    out["mean_candidates"] = float(np.mean(counts.num_candidates)) if counts.greater.size else float("nan")
    for kind in ("optimistic", "pessimistic"):
        out[kind] = rank_metrics(counts.ranks(kind), hits_at)
    out["rank_histogram"] = rank_histogram(ranks)
    return out


def summarize(
    lhs: SideCounts, rhs: SideCounts, rel: np.ndarray, relation_names: Sequence[str], hits_at: Sequence[int]
) -> dict[str, object]:
    """Overall and per-relation metrics for the lhs side, the rhs side and both (each edge counted twice)."""

    def block(mask: np.ndarray | None) -> dict[str, object]:
        left = lhs if mask is None else lhs.take(mask)
        right = rhs if mask is None else rhs.take(mask)
        return {
            "lhs": side_metrics(left, hits_at),
            "rhs": side_metrics(right, hits_at),
            "mean": side_metrics(SideCounts.concat([left, right]), hits_at),
        }

    per_relation = {}
    for r, name in enumerate(relation_names):
        mask = rel == r
        if mask.any():
            per_relation[name] = block(mask)
    return {"overall": block(None), "per_relation": per_relation}

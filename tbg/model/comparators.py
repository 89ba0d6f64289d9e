"""Comparators: similarity of two embeddings, higher = more related.

Each comparator has a ``prepare`` step applied to both sides before comparing (cos normalises there), so
scoring many queries against many candidates is always one matrix product: this is where speed comes from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Comparator:
    name = "base"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise scores of prepared a[..., N, D] and b[..., N, D] -> [..., N]."""
        raise NotImplementedError

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """All-pairs scores of prepared a[..., N, D] and b[..., M, D] -> [..., N, M]."""
        raise NotImplementedError


class DotComparator(Comparator):
    name = "dot"

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(-1)

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.transpose(-1, -2)


class CosComparator(DotComparator):
    name = "cos"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, eps=1e-12)


class SquaredL2Comparator(Comparator):
    """Negative squared Euclidean distance, via ``|a|² + |b|² - 2ab`` so all-pairs is one GEMM."""

    name = "squared_l2"

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -((a - b) ** 2).sum(-1)

    def _squared_distances(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a_sq = (a * a).sum(-1, keepdim=True)
        b_sq = (b * b).sum(-1).unsqueeze(-2)
        return (a_sq + b_sq - 2 * (a @ b.transpose(-1, -2))).clamp_min(0)

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -self._squared_distances(a, b)


class L2Comparator(SquaredL2Comparator):
    """Negative Euclidean distance; clamped before the sqrt so the gradient stays finite at 0."""

    name = "l2"

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -((a - b) ** 2).sum(-1).clamp_min(1e-30).sqrt()

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -self._squared_distances(a, b).clamp_min(1e-30).sqrt()


COMPARATORS: dict[str, type[Comparator]] = {
    c.name: c for c in (DotComparator, CosComparator, SquaredL2Comparator, L2Comparator)
}


def build_comparator(name: str) -> Comparator:
    try:
        return COMPARATORS[str(name)]()
    except KeyError:
        raise ValueError(f"unknown comparator {name!r} (choices: {', '.join(COMPARATORS)})") from None

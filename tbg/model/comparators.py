"""Comparators: similarity of two embeddings, higher = more related.

Each comparator has a ``prepare`` step applied to both sides before comparing (cos normalises there), so
scoring many queries against many candidates is always one matrix product: this is where speed comes from.
Each is a class registered by its config name in :data:`COMPARATORS`; torch is imported only when one
runs, so the config checks names here without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tbg.registry import Registry

if TYPE_CHECKING:
    import torch


class Comparator:
    name: str  # set by COMPARATORS.register

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise scores of prepared a[..., N, D] and b[..., N, D] -> [..., N]."""
        raise NotImplementedError

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """All-pairs scores of prepared a[..., N, D] and b[..., M, D] -> [..., N, M]."""
        raise NotImplementedError


COMPARATORS: Registry[type[Comparator]] = Registry("comparator")


@COMPARATORS.register("dot")
class DotComparator(Comparator):
    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(-1)

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.transpose(-1, -2)


@COMPARATORS.register("cos")
class CosComparator(DotComparator):
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F  # loaded already whenever there are tensors to compare

        return F.normalize(x, dim=-1, eps=1e-12)


@COMPARATORS.register("l2")
class L2Comparator(Comparator):
    """Negative Euclidean distance; clamped before the sqrt so the gradient stays finite at 0."""

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -((a - b) ** 2).sum(-1).clamp_min(1e-30).sqrt()

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -squared_distances(a, b).clamp_min(1e-30).sqrt()


@COMPARATORS.register("squared_l2")
class SquaredL2Comparator(Comparator):
    """Negative squared Euclidean distance."""

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -((a - b) ** 2).sum(-1)

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -squared_distances(a, b)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All-pairs ``|a - b|²`` as ``|a|² + |b|² - 2ab``, so it is one GEMM (clamped at 0 against rounding)."""
    a_sq = (a * a).sum(-1, keepdim=True)
    b_sq = (b * b).sum(-1).unsqueeze(-2)
    return (a_sq + b_sq - 2 * (a @ b.transpose(-1, -2))).clamp_min(0)


def build_comparator(name: str) -> Comparator:
    return COMPARATORS.resolve(name)()

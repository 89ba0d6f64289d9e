"""Relation operators g_r, one registered class each: none, translation, diagonal, linear, affine, complex_diagonal.

An operator declares its parameters (:class:`Param`: state-dict name, per-relation shape at the relation's
dim, identity initialisation) and applies itself to a batch.  It does not hold the tensors: all relations of
one side keep each parameter in one tensor padded to the widest dim (``SideOperators`` in
:mod:`tbg.model.scoring`), so a batch mixing relations is transformed with one gather per operator kind.
Operators that share a parameter name (affine uses linear's ``linear`` and translation's ``translation``)
share its declaration and its tensor, which keeps the state-dict keys ``<side>_operators.<param>``.

This module imports torch only when an operator is applied: the config checks operator names here and
``tbg export`` slices checkpoints by :meth:`Operator.layout` without torch.  Initialisation is the identity
map (PBG's choice): translation 0, diagonal 1, linear I, complex 1+0i.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tbg.registry import Registry

if TYPE_CHECKING:
    import torch


class Init(enum.Enum):
    """How a parameter starts: every relation's slice is the identity of its operator."""

    zeros = "zeros"
    ones = "ones"
    identity = "identity"  # a square matrix per relation (the last two dims)


@dataclass(frozen=True)
class Param:
    """One parameter of a side's operators: ``[num_relations, *shape(dim)]``, padded to the widest dim."""

    name: str  # the state-dict key under lhs_operators. / rhs_operators.
    shape: Callable[[int], tuple[int, ...]]  # the per-relation shape at embedding dim d
    init: Init


def _vector(d: int) -> tuple[int, ...]:
    return (d,)


def _matrix(d: int) -> tuple[int, ...]:
    return (d, d)


def _half_vector(d: int) -> tuple[int, ...]:
    return (d // 2,)


TRANSLATION = Param("translation", _vector, Init.zeros)
DIAGONAL = Param("diagonal", _vector, Init.ones)
LINEAR = Param("linear", _matrix, Init.identity)
REAL = Param("real", _half_vector, Init.ones)
IMAG = Param("imag", _half_vector, Init.zeros)


class Operator:
    """g_r.  ``apply`` gets the side's padded parameters by name, rows ``x [N, d]`` and ``index``: one relation
    id per row (a batch mixing relations: one gather per parameter) or a single relation's id shared by every
    row (all candidates of one relation, no gather).  It slices each parameter to ``x``'s own dim ``d``."""

    name: str  # set by OPERATORS.register
    params: tuple[Param, ...] = ()
    is_identity = False  # True only for "none": candidates then never depend on the relation

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def dim_problem(cls, dim: int) -> str | None:
        """Why this operator cannot act on ``dim``-wide embeddings (None: it can); checked with the config."""
        return None

    @classmethod
    def layout(cls, dim: int) -> list[tuple[str, tuple[int, ...]]]:
        """Each parameter's name and shape for one relation of dim ``dim`` (what export slices out)."""
        return [(p.name, p.shape(dim)) for p in cls.params]


OPERATORS: Registry[type[Operator]] = Registry("operator")


def rows_of(param: torch.Tensor, index: torch.Tensor | int, *width: int) -> torch.Tensor:
    """``param[index]`` cut to ``width`` on its trailing dims: no slice op where the parameter is that wide
    already (every relation of the side at the widest dim, the usual case), so nor a slice in backward."""
    rows = param[index]
    if tuple(param.shape[1:]) == width:
        return rows
    return rows[(..., *(slice(0, w) for w in width))]


def params_of(kinds: list[str] | tuple[str, ...] | set[str]) -> list[Param]:
    """The parameters operators ``kinds`` use, one per name, in a fixed order (first use over the registry).

    Two operators declaring the same name must declare the same :class:`Param` (they share its tensor).
    """
    seen: dict[str, Param] = {}
    for name in OPERATORS.names():
        for p in OPERATORS.resolve(name).params:
            if seen.setdefault(p.name, p) != p:
                raise ValueError(f"operator {name!r} declares parameter {p.name!r} unlike an earlier operator")
    used = {p.name for kind in kinds for p in OPERATORS.resolve(kind).params}
    return [p for p in seen.values() if p.name in used]


@OPERATORS.register("none")
class NoOperator(Operator):
    """g(x) = x."""

    is_identity = True

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
        return x


@OPERATORS.register("translation")
class Translation(Operator):
    """g(x) = x + t_r (TransE)."""

    params = (TRANSLATION,)

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
        return x + rows_of(params["translation"], index, x.shape[-1])


@OPERATORS.register("diagonal")
class Diagonal(Operator):
    """g(x) = x ⊙ d_r (DistMult with dot)."""

    params = (DIAGONAL,)

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
        return x * rows_of(params["diagonal"], index, x.shape[-1])


@OPERATORS.register("linear")
class Linear(Operator):
    """g(x) = W_r x (RESCAL with dot)."""

    params = (LINEAR,)

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
        d = x.shape[-1]
        w = rows_of(params["linear"], index, d, d)
        return x @ w.T if isinstance(index, int) else (w @ x.unsqueeze(-1)).squeeze(-1)


@OPERATORS.register("affine")
class Affine(Linear):
    """g(x) = W_r x + t_r."""

    params = (LINEAR, TRANSLATION)

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
        return super().apply(params, x, index) + rows_of(params["translation"], index, x.shape[-1])


@OPERATORS.register("complex_diagonal")
class ComplexDiagonal(Operator):
    """g(x) = x · r in C^{d/2} (ComplEx with dot): real parts in the first half of the vector, imaginary after."""

    params = (REAL, IMAG)

    @classmethod
    def dim_problem(cls, dim: int) -> str | None:
        return f"needs an even embedding_dim, got {dim}" if dim % 2 else None

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
        import torch  # loaded already whenever there are tensors to apply to

        half = x.shape[-1] // 2
        re_x, im_x = x[..., :half], x[..., half:]
        re_r, im_r = rows_of(params["real"], index, half), rows_of(params["imag"], index, half)
        return torch.cat([re_x * re_r - im_x * im_r, re_x * im_r + im_x * re_r], dim=-1)

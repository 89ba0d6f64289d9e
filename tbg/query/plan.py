"""Query groups and when a faiss index over raw candidates ranks exactly like the model.

A group is a batch of prepared queries against one candidate type under one candidate transform.  The index
of a type holds ``prepare(θ_y)``.  When candidates pass through no relation operator (relation_sides both,
or target lhs, or identity operators) the prepared query searches that index directly.  With
relation_sides rhs the rhs candidates are ``prepare(g_r(θ_y))``; every operator tbg has is affine,
``g_r(y) = A y + b`` (measured here from the model's own function, and verified on random vectors), so:

=========================  ==================================  =============================
comparator                 g_r affine                           index query
=========================  ==================================  =============================
dot                        any A, b                             Aᵀq  (q·(Ay+b) = Aᵀq·y + q·b)
l2, squared_l2             A = I (translation, none)            q - b
cos                        g_r = identity                       q
=========================  ==================================  =============================

Any other combination (cos or l2 after a diagonal/linear/... operator on candidates, or a comparator faiss
has no metric for) is scanned exactly through the model's score function: correctness before speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tbg.model.scoring import RelationModel
from tbg.query.index import METRICS

_PROBE_ROWS = 8


@dataclass
class QueryGroup:
    """Queries against one candidate type with one candidate transform."""

    ctype: str
    queries: torch.Tensor  # [n, d] prepared queries, as the model scores them
    candidates: Callable[[torch.Tensor], torch.Tensor]  # raw candidate rows -> prepared candidates
    index_queries: np.ndarray | None  # [n, d] in the type's index space, or None: scan through the model
    exclude_rows: np.ndarray  # (row, position) pairs never returned: known edges, the query entity itself
    exclude_positions: np.ndarray

    def __len__(self) -> int:
        return int(self.queries.shape[0])


def _affine(fn: Callable[[torch.Tensor], torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(Aᵀ, b) with fn(Y) = Y Aᵀ + b for row vectors, or None when fn is not affine."""
    zero = fn(torch.zeros(1, dim))[0]
    rows = fn(torch.eye(dim)) - zero  # row i = A e_i = column i of A
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(_PROBE_ROWS, dim, generator=gen)
    got, want = fn(probe), probe @ rows + zero
    scale = 1.0 + float(want.abs().max())
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * scale):
        return None
    return rows, zero


def index_queries(
    model: RelationModel, comparator_name: str, target: str, rel: int, queries: torch.Tensor
) -> np.ndarray | None:
    """Query vectors for the candidate type's index that rank like the model, or None (scan instead)."""
    if comparator_name not in METRICS:
        return None
    if not model.candidates_need_relation(target):
        return queries.numpy()
    metric, prepare_is_identity = METRICS[comparator_name]
    dim = int(queries.shape[1])

    def fn(y: torch.Tensor) -> torch.Tensor:
        return model.candidates(target, y, rel)

    if not prepare_is_identity:  # cos: only an identity operator keeps the index space
        probe = torch.randn(_PROBE_ROWS, dim, generator=torch.Generator().manual_seed(0))
        same = torch.allclose(fn(probe), model.comparator.prepare(probe), rtol=1e-5, atol=1e-6)
        return queries.numpy() if same else None
    fit = _affine(fn, dim)
    if fit is None:
        return None
    a_t, b = fit
    if metric == "ip":
        return (queries @ a_t.T).numpy()
    if torch.allclose(a_t, torch.eye(dim), rtol=0, atol=1e-6):
        return (queries - b).numpy()
    return None

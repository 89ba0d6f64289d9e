"""The score function shared by training, evaluation and export: everything but the entity tables.

``SideOperators`` holds one side's operator parameters (:mod:`tbg.model.operators` declares them);
``RelationModel`` combines the sides with the comparator.

For an edge (x, r, y) a model predicts one side from the other.  ``target="rhs"`` ranks rhs candidates for
(x, r, ?); ``target="lhs"`` ranks lhs candidates for (?, r, y).  The score is always
``comparator(query, candidate)``:

============== =========================== ==================================
relation_sides  target="rhs"                target="lhs"
============== =========================== ==================================
both (default)  c(g_r^lhs(θx), θy')         c(θx', g_r^rhs(θy))
rhs (PBG/TwHIN) c(θx, g_r(θy'))             c(θx', g_r(θy))
============== =========================== ==================================

With ``both`` the candidates never pass through an operator, so negatives shared by edges of different
relations are scored with a single matrix product.  With ``rhs`` and a relation-aware operator the rhs
candidates must be transformed per relation (``candidates_need_relation``).  Positives and negatives go
through exactly the same function (TwHIN's release does not: it drops the relation term for negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from tbg.config import Config
from tbg.model.comparators import build_comparator
from tbg.model.operators import OPERATORS, Init, Operator, params_of

Target = Literal["lhs", "rhs"]


class SideOperators(nn.Module):
    """The operators of every relation on one side (lhs or rhs), parameters indexed by relation id.

    Each parameter the present operators declare is one ``[num_relations, *shape(widest dim)]`` tensor (rows
    of relations whose operator does not use it stay at the identity), so a batch mixing relations costs one
    gather per operator kind present, not a loop over relations.
    """

    def __init__(self, kinds: Sequence[str], dims: Sequence[int]) -> None:
        super().__init__()
        if len(kinds) != len(dims):
            raise ValueError("one operator kind and one dim per relation")
        self.kinds = [str(k) for k in kinds]
        self.dims = [int(d) for d in dims]
        num, dmax = len(kinds), max(dims)
        order = OPERATORS.names()
        self.kind_ids = sorted(set(self.kinds), key=order.index)
        self.operators: list[Operator] = [OPERATORS.resolve(k)() for k in self.kind_ids]
        self._by_relation = [self.operators[self.kind_ids.index(k)] for k in self.kinds]
        # relation id -> index of its kind in kind_ids
        self.register_buffer(
            "_kind_of", torch.tensor([self.kind_ids.index(k) for k in self.kinds], dtype=torch.long), persistent=False
        )
        for p in params_of(self.kind_ids):
            self.register_parameter(p.name, nn.Parameter(_initial(p.init, num, p.shape(dmax))))

    @property
    def is_identity_only(self) -> bool:
        return all(op.is_identity for op in self.operators)

    def _params(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters(recurse=False))

    def forward(self, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """g_{rel[i]}(x[i]) for every row i (relations may be mixed)."""
        return self._through(self._params(), x, rel, self._kind_of)

    def _through(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor, kind_of: torch.Tensor
    ) -> torch.Tensor:
        """Row i through the operator of relation ``index[i]`` (``kind_of``: relation -> kind).  Several kinds:
        every kind on every row, each row keeping its own kind's, so no shape depends on the data (no host
        sync); a row's parameters under the other kinds get an exactly zero gradient, which moves nothing."""
        out = self.operators[0].apply(params, x, index)
        if len(self.operators) > 1:
            kind = kind_of[index].unsqueeze(-1)
            for k, op in enumerate(self.operators[1:], 1):
                out = torch.where(kind == k, op.apply(params, x, index).to(out.dtype), out)
        return out

    def pairs_with(self, other: SideOperators) -> bool:
        """True when ``other`` has the same operators, relation by relation (its parameters line up with these)."""
        return self.kinds == other.kinds and self.dims == other.dims

    def forward_pair(self, other: SideOperators, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """``stack([self(x[0], rel), other(x[1], rel)])`` for ``x [2, B, d]`` and :meth:`pairs_with` operators,
        as one application: both sides' parameters side by side (``[2R, ...]``), the second side's relation ids
        offset by R, so each operator kind costs one gather, one application and one backward for both."""
        theirs = other._params()
        params = {name: torch.cat([p, theirs[name]]) for name, p in self._params().items()}
        index = torch.stack([rel, rel + len(self.kinds)])  # [2, B]: gathers [2, B, ...] rows for x as it is
        kind_of = self._kind_of.repeat(2) if len(self.operators) > 1 else self._kind_of
        return self._through(params, x, index, kind_of)

    def apply_one(self, x: torch.Tensor, rel: int) -> torch.Tensor:
        """g_rel applied to every row of x (e.g. all candidates of one relation)."""
        return self._by_relation[rel].apply(self._params(), x, int(rel))

    def export(self, rel: int) -> dict[str, torch.Tensor]:
        """The parameters of relation ``rel`` at its own dim (for export/inspection)."""
        params = self._params()
        return {
            name: params[name][(rel, *(slice(0, n) for n in shape))].detach().clone()
            for name, shape in self._by_relation[rel].layout(self.dims[rel])
        }


def _initial(init: Init, num: int, shape: tuple[int, ...]) -> torch.Tensor:
    if init is Init.zeros:
        return torch.zeros(num, *shape)
    if init is Init.ones:
        return torch.ones(num, *shape)
    return torch.eye(shape[-1]).expand(num, *shape).clone()


class RelationModel(nn.Module):
    """Per-relation operators (one set per side in ``both`` mode) and the comparator."""

    def __init__(self, kinds: list[str], dims: list[int], comparator: str, sides: str = "both") -> None:
        super().__init__()
        self.sides = str(sides)
        if self.sides not in ("both", "rhs"):
            raise ValueError(f"relation_sides must be both or rhs, got {sides!r}")
        self.comparator = build_comparator(comparator)
        # rhs_operators act on θy; lhs_operators (both mode only) act on θx.
        self.rhs_operators = SideOperators(kinds, dims)
        self.lhs_operators = SideOperators(kinds, dims) if self.sides == "both" else None

    @classmethod
    def from_config(cls, cfg: Config) -> RelationModel:
        model = cfg.model
        kinds = [str(r.operator) for r in model.relations]
        dims = [model.table(r.lhs).embedding_dim for r in model.relations]
        return cls(kinds, dims, str(model.comparator), str(model.relation_sides))

    @property
    def num_relations(self) -> int:
        return len(self.rhs_operators.kinds)

    def candidates_need_relation(self, target: Target) -> bool:
        """True when candidates of ``target`` must pass through the relation's operator."""
        return target == "rhs" and self.sides == "rhs" and not self.rhs_operators.is_identity_only

    def query(self, target: Target, known: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """Prepared query vectors from the known side's embeddings (relations may be mixed)."""
        if target == "rhs":
            q = self.lhs_operators(known, rel) if self.lhs_operators is not None else known
        else:
            q = self.rhs_operators(known, rel)
        return self.comparator.prepare(q)

    def queries(self, known: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """Both targets' prepared queries ``[2, B, D]`` from ``known [2, B, D]`` (index 0 the lhs rows, whose
        queries rank rhs candidates; index 1 the rhs rows, ranking lhs candidates): ``stack([query("rhs",
        known[0], rel), query("lhs", known[1], rel)])``, the two sides' operators applied as one where they
        are the same operators (:meth:`SideOperators.forward_pair`)."""
        lhs, rhs = self.lhs_operators, self.rhs_operators
        if lhs is not None and lhs.pairs_with(rhs):
            return self.comparator.prepare(lhs.forward_pair(rhs, known, rel))
        return torch.stack([self.query("rhs", known[0], rel), self.query("lhs", known[1], rel)])

    def candidates(self, target: Target, emb: torch.Tensor, rel: int | None = None) -> torch.Tensor:
        """Prepared candidate vectors; ``rel`` is required when :meth:`candidates_need_relation`."""
        if self.candidates_need_relation(target):
            if rel is None:
                raise ValueError("rhs candidates depend on the relation in relation_sides=rhs mode")
            emb = self.rhs_operators.apply_one(emb, rel)
        return self.comparator.prepare(emb)

    def candidates_per_row(self, target: Target, emb: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """Prepared candidate vectors, one relation per row (for positives)."""
        if self.candidates_need_relation(target):
            emb = self.rhs_operators(emb, rel)
        return self.comparator.prepare(emb)

    def score_positive(self, target: Target, lhs: torch.Tensor, rhs: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """Scores [B] of true edges in the ``target`` direction."""
        known, cand = (lhs, rhs) if target == "rhs" else (rhs, lhs)
        return self.comparator.pairwise(self.query(target, known, rel), self.candidates_per_row(target, cand, rel))

    def score_candidates(self, target: Target, known: torch.Tensor, rel: int, candidates: torch.Tensor) -> torch.Tensor:
        """Scores [B, C] of B queries of one relation against C raw candidate embeddings."""
        rel_t = torch.full((known.shape[0],), rel, dtype=torch.long, device=known.device)
        return self.comparator.matrix(self.query(target, known, rel_t), self.candidates(target, candidates, rel))

    def score_batch(
        self, target: Target, known: torch.Tensor, true_cand: torch.Tensor, rel: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positives [B] and all B queries against shared raw negatives [C] -> [B, C], the query computed once."""
        q = self.query(target, known, rel)
        pos = self.comparator.pairwise(q, self.candidates_per_row(target, true_cand, rel))
        return pos, self.negative_scores(target, q, rel, negatives)

    def negative_scores(
        self, target: Target, queries: torch.Tensor, rel: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """Training scores [B, C] of prepared queries (from :meth:`query`) against shared raw negatives [C].

        The same functions as :meth:`score_candidates`, for a batch mixing relations: one matrix product when
        candidates need no relation (``both`` mode, or identity rhs operators), else one per relation present.
        """
        if not self.candidates_need_relation(target):
            return self.comparator.matrix(queries, self.candidates(target, negatives))
        order = torch.argsort(rel, stable=True)
        present, counts = torch.unique_consecutive(rel[order], return_counts=True)
        blocks = [
            self.comparator.matrix(q_r, self.candidates(target, negatives, int(r)))
            for q_r, r in zip(queries[order].split(counts.tolist()), present.tolist())
        ]
        return torch.cat(blocks)[torch.argsort(order)]

    def export_relation(self, rel: int) -> dict[str, torch.Tensor]:
        """Named parameters of one relation, e.g. ``rhs.translation`` / ``lhs.translation``."""
        out = {f"rhs.{k}": v for k, v in self.rhs_operators.export(rel).items()}
        if self.lhs_operators is not None:
            out.update({f"lhs.{k}": v for k, v in self.lhs_operators.export(rel).items()})
        return out

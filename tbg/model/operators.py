"""Relation operators g_r: translation, diagonal, linear, affine, complex_diagonal (and none).

All relations' parameters of one side live in one module, padded to the widest embedding dim, so that a
batch mixing relations is transformed with one gather per operator kind instead of a loop over edges.
Initialisation is the identity map (PBG's choice): translation 0, diagonal 1, linear I, complex 1+0i.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tbg.config import Operator

OPERATOR_KINDS: tuple[str, ...] = tuple(op.value for op in Operator)


def _apply_kind(kind: str, params: dict[str, torch.Tensor], x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
    """Apply operator ``kind``: ``index`` is one parameter row per row of ``x`` (mixed relations), or a
    single relation's row shared by every row of ``x`` (e.g. all candidates of one relation, no gather)."""
    d = x.shape[-1]
    if kind == "none":
        return x
    if kind == "translation":
        return x + params["translation"][index, :d]
    if kind == "diagonal":
        return x * params["diagonal"][index, :d]
    if kind in ("linear", "affine"):
        w = params["linear"][index, :d, :d]
        out = x @ w.T if isinstance(index, int) else torch.bmm(w, x.unsqueeze(-1)).squeeze(-1)
        return out + params["translation"][index, :d] if kind == "affine" else out
    if kind == "complex_diagonal":
        half = d // 2
        re_x, im_x = x[..., :half], x[..., half:d]
        re_r, im_r = params["real"][index, :half], params["imag"][index, :half]
        return torch.cat([re_x * re_r - im_x * im_r, re_x * im_r + im_x * re_r], dim=-1)
    raise ValueError(f"unknown operator {kind!r}")


class SideOperators(nn.Module):
    """The operators of every relation on one side (lhs or rhs), parameters indexed by relation id."""

    def __init__(self, kinds: Sequence[str], dims: Sequence[int]) -> None:
        super().__init__()
        if len(kinds) != len(dims):
            raise ValueError("one operator kind and one dim per relation")
        self.kinds = [str(k) for k in kinds]
        self.dims = [int(d) for d in dims]
        num, dmax = len(kinds), max(dims)
        present = set(self.kinds)
        self.kind_ids = sorted(present, key=OPERATOR_KINDS.index)
        # relation id -> index of its kind; relation id -> row in its parameters (rows are per relation)
        self.register_buffer(
            "_kind_of", torch.tensor([self.kind_ids.index(k) for k in self.kinds], dtype=torch.long), persistent=False
        )
        if present & {"translation", "affine"}:
            self.translation = nn.Parameter(torch.zeros(num, dmax))
        if "diagonal" in present:
            self.diagonal = nn.Parameter(torch.ones(num, dmax))
        if present & {"linear", "affine"}:
            self.linear = nn.Parameter(torch.eye(dmax).repeat(num, 1, 1))
        if "complex_diagonal" in present:
            self.real = nn.Parameter(torch.ones(num, dmax // 2))
            self.imag = nn.Parameter(torch.zeros(num, dmax // 2))

    @property
    def is_identity_only(self) -> bool:
        return self.kind_ids == ["none"]

    def _params(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters(recurse=False))

    def forward(self, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """g_{rel[i]}(x[i]) for every row i (relations may be mixed)."""
        params = self._params()
        if len(self.kind_ids) == 1:
            return _apply_kind(self.kind_ids[0], params, x, rel)
        out = torch.empty_like(x)
        kind_of = self._kind_of[rel]
        for k, kind in enumerate(self.kind_ids):
            mask = kind_of == k
            if bool(mask.any()):
                out[mask] = _apply_kind(kind, params, x[mask], rel[mask]).to(out.dtype)
        return out

    def apply_one(self, x: torch.Tensor, rel: int) -> torch.Tensor:
        """g_rel applied to every row of x (e.g. all candidates of one relation)."""
        return _apply_kind(self.kinds[rel], self._params(), x, int(rel))

    def export(self, rel: int) -> dict[str, torch.Tensor]:
        """The parameters of relation ``rel`` at its own dim (for export/inspection)."""
        kind, d = self.kinds[rel], self.dims[rel]
        params = self._params()
        out: dict[str, torch.Tensor] = {}
        if kind in ("translation", "affine"):
            out["translation"] = params["translation"][rel, :d].detach().clone()
        if kind == "diagonal":
            out["diagonal"] = params["diagonal"][rel, :d].detach().clone()
        if kind in ("linear", "affine"):
            out["linear"] = params["linear"][rel, :d, :d].detach().clone()
        if kind == "complex_diagonal":
            out["real"] = params["real"][rel, : d // 2].detach().clone()
            out["imag"] = params["imag"][rel, : d // 2].detach().clone()
        return out

"""Rows gathered from an embedding table for one step, and where their gradients go.

A step reads two kinds of rows: the positives' own rows (a few thousand, used by several products) and
shared negative candidates (PBG's exact per-chunk scheme draws C·G of them per side: 40,000 rows a step
on WordNet).  The positives are ordinary autograd leaves.  The candidates are scored by
:func:`candidate_scores`, an autograd function that gathers them by id, multiplies, and in backward hands
their gradient straight to the step's row list instead of accumulating it into a leaf: no fp32 leaf
gradient, no autocast copies of transposed operands, which is most of what PBG's exact scheme cost per step
(docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TableKey = tuple[str, int]  # (entity type, partition)


@dataclass
class Gathered:
    """Rows ``ids`` of table ``key`` that a step read; their gradient is the leaf's, or ``grad`` once set."""

    key: TableKey
    ids: torch.Tensor
    leaf: torch.Tensor | None = None
    grad: torch.Tensor | None = None

    def gradient(self) -> torch.Tensor | None:
        return self.leaf.grad if self.leaf is not None else self.grad


class _CandidateScores(torch.autograd.Function):
    """``scores[c] = queries[c] @ table[ids[c]]ᵀ``; backward returns d(queries) and stores d(rows) in ``sink``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        queries: torch.Tensor,
        table: torch.Tensor,
        ids: torch.Tensor,
        sink: Gathered | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        rows = torch.nn.functional.embedding(ids, table).to(dtype)  # a faster gather than index_select here
        q = queries.to(dtype)
        ctx.save_for_backward(q, rows)
        ctx.sink = sink
        # bf16 products are rounded to bf16 either way; the caller's concatenation into the fp32 logits
        # buffer widens them in the same pass (no separate fp32 copy of every score block)
        return torch.matmul(q, rows.transpose(-1, -2))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        q, rows = ctx.saved_tensors
        g = grad.to(q.dtype)
        d_queries = torch.matmul(g, rows).float() if ctx.needs_input_grad[0] else None
        if ctx.sink is not None:
            ctx.sink.grad = torch.matmul(g.transpose(-1, -2), q).reshape(-1, rows.shape[-1])
        return d_queries, None, None, None, None


def candidate_scores(
    queries: torch.Tensor,
    table: torch.Tensor,
    ids: torch.Tensor,
    key: TableKey,
    gathered: list[Gathered] | None,
    bf16: bool,
) -> torch.Tensor:
    """Dot scores ``[C, S, K]`` (bf16 when ``bf16``, else fp32) of prepared queries ``[C, S, D]`` against the
    table rows ``ids [C, K]`` (or ``[S, K]`` from ``[S, D]`` and ``[K]``: one shared candidate set, no batch
    dimension to select away).

    ``gathered`` (None: no gradient) receives the rows and, after backward, their gradient ``[C·K, D]``
    (bf16 when ``bf16``).  The product runs in bf16 when ``bf16``; the caller widens the scores to fp32 where
    it concatenates them into the logits that masks and losses read.
    """
    sink = None
    if gathered is not None and torch.is_grad_enabled():
        sink = Gathered(key, ids.reshape(-1))
        gathered.append(sink)
    dtype = torch.bfloat16 if bf16 else torch.float32
    return _CandidateScores.apply(queries, table, ids, sink, dtype)

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

import math
from dataclasses import dataclass

import torch

TableKey = tuple[str, int]  # (entity type, partition)


def as_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype``, without dispatching a no-op ``to`` when it is already (one ATen op fewer per call)."""
    return x if x.dtype == dtype else x.to(dtype)


@dataclass
class Gathered:
    """Rows ``ids`` of table ``key`` that a step read; their gradient is the leaf's, or ``grad`` once set."""

    key: TableKey
    ids: torch.Tensor
    leaf: torch.Tensor | None = None
    grad: torch.Tensor | None = None

    def gradient(self) -> torch.Tensor | None:
        """``[ids.numel(), D]``: the leaf's gradient (a leaf of any shape), or ``grad``."""
        if self.leaf is None:
            return self.grad
        grad = self.leaf.grad
        return grad if grad is None or grad.dim() == 2 else grad.reshape(-1, grad.shape[-1])


class _CandidateScores(torch.autograd.Function):
    """``scores[..., s, k] = queries[..., s, :] · rows[..., k, :]``, the rows being ``prefix`` (rows the
    step holds already, e.g. the batch's own; autograd inputs) followed by rows gathered by id, side ``i``'s
    (``ids[i]``) from ``tables[i]`` (one table: every side from it); backward returns d(queries) and
    d(prefix) and stores each side's d(gathered rows) in its sink."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        queries: torch.Tensor,
        prefix: torch.Tensor | None,
        ids: torch.Tensor | None,
        tables: tuple[torch.Tensor, ...],
        sinks: tuple[Gathered, ...] | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        parts = [] if prefix is None else [as_dtype(prefix, dtype)]
        if ids is not None:
            if len(tables) == 1:  # a faster gather than index_select here
                parts.append(as_dtype(torch.nn.functional.embedding(ids, tables[0]), dtype))
            else:
                gathered = [torch.nn.functional.embedding(i, t) for i, t in zip(ids, tables, strict=True)]
                parts.append(as_dtype(torch.stack(gathered), dtype))
        rows = parts[0] if len(parts) == 1 else torch.cat(parts, -2)
        # one bmm over the flattened leading dims (matmul would expand and reshape both operands first)
        n = math.prod(queries.shape[:-2])
        q = as_dtype(queries, dtype).reshape(n, *queries.shape[-2:])
        rows = rows.reshape(n, *rows.shape[-2:])
        ctx.save_for_backward(q, rows)
        ctx.sinks = sinks
        ctx.shape = queries.shape
        ctx.prefix = None if prefix is None else prefix.shape
        # bf16 products are rounded to bf16 either way; the caller's concatenation into the fp32 logits
        # buffer widens them in the same pass (no separate fp32 copy of every score block)
        return torch.bmm(q, rows.transpose(1, 2)).view(*queries.shape[:-1], rows.shape[1])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        q, rows = ctx.saved_tensors
        g = as_dtype(grad, q.dtype).reshape(q.shape[0], q.shape[1], rows.shape[1])
        d_queries = as_dtype(torch.bmm(g, rows).view(ctx.shape), torch.float32) if ctx.needs_input_grad[0] else None
        d_prefix = None
        if ctx.sinks is not None or ctx.needs_input_grad[1]:
            d_rows = torch.bmm(g.transpose(1, 2), q)
            p = 0 if ctx.prefix is None else ctx.prefix[-2]
            if ctx.needs_input_grad[1]:
                d_prefix = as_dtype(d_rows[:, :p].reshape(ctx.prefix), torch.float32)
            if ctx.sinks is not None:
                d_rows = d_rows[:, p:] if p else d_rows
                dim = rows.shape[-1]
                if len(ctx.sinks) == 1:
                    ctx.sinks[0].grad = d_rows.reshape(-1, dim)
                else:
                    for sink, part in zip(ctx.sinks, d_rows.reshape(len(ctx.sinks), -1, dim), strict=True):
                        sink.grad = part
        return d_queries, d_prefix, None, None, None, None


def candidate_scores(
    queries: torch.Tensor,
    sources: list[tuple[TableKey, torch.Tensor]],
    ids: torch.Tensor | None,
    gathered: list[Gathered] | None,
    bf16: bool,
    prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dot scores ``[..., S, P + K]`` (bf16 when ``bf16``, else fp32) of prepared queries ``[..., S, D]``
    against ``prefix [..., P, D]`` (prepared rows the caller has, differentiable; None: P = 0) and table rows
    ``ids [..., K]`` (None: K = 0).  The leading dims match (``[S, K]`` from ``[S, D]`` and ``[K]``: one
    shared candidate set).  ``sources``: one (key, table), or one per index of the leading dim (the two
    sides of a step: side ``i``'s ids ``ids[i]`` come from ``sources[i]``).

    ``gathered`` (None: no gradient) receives the gathered rows and, after backward, their gradient
    ``[rows, D]`` (bf16 when ``bf16``), one entry per table.  The product runs in bf16 when ``bf16``; the
    caller widens the scores to fp32 where it concatenates them into the logits that masks and losses read.
    """
    if len(sources) > 1 and all(key == sources[0][0] for key, _ in sources):
        sources = sources[:1]  # both sides read one table: one gather, one gradient entry
    sinks = None
    if ids is not None and gathered is not None and torch.is_grad_enabled():
        if len(sources) == 1:
            sinks = (Gathered(sources[0][0], ids.reshape(-1)),)
        else:
            sinks = tuple(Gathered(key, part.reshape(-1)) for (key, _), part in zip(sources, ids, strict=True))
        gathered.extend(sinks)
    dtype = torch.bfloat16 if bf16 else torch.float32
    return _CandidateScores.apply(queries, prefix, ids, tuple(t for _, t in sources), sinks, dtype)

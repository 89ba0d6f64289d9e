"""A step's whole score matrix with the dot comparator, as one autograd function with a hand-written backward.

For both sides at once (index 0 predicts rhs, 1 lhs) it builds the fp32 logits ``[2B, 1 + K]`` (side 0's
rows first) that the mask and the loss read: column 0 the positive's score, then up to two blocks of negative
columns, each a batched product of row groups against their own candidates (:class:`Blocks`):

- *own*: each group of ``own_rows`` consecutive positives against its own true candidates (the whole batch
  when it is one group; PBG's chunks otherwise);
- *sampled*: each group of ``sampled_rows`` consecutive positives against rows gathered by id (uniform
  samples, selected in-batch entities); their gradient goes straight to the step's row list
  (:class:`~tbg.train.gathered_rows.Gathered`), never to an fp32 leaf.

Each product writes into its slice of the logits, so nothing is concatenated or reshaped in autograd; the
backward converts the logits' gradient to the product dtype once and returns fp32 gradients of the queries
and the true candidates, the positive's column included.  With ``bf16`` the products run in bf16 (their
operands are rounded to it once); the positive is scored in fp32, exactly as
:meth:`tbg.model.comparators.DotComparator.pairwise`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tbg.train.gathered_rows import Gathered, TableKey, as_dtype


@dataclass(frozen=True)
class Blocks:
    """The negative columns of a step: ``own_rows`` (None: no own block) and ``sampled [2, groups, W]`` ids with
    ``sampled_rows`` positives per group (None: no sampled block); groups cover the batch, the last one
    possibly short (its missing rows are zero padding, never returned)."""

    own_rows: int | None
    sampled: torch.Tensor | None
    sampled_rows: int = 0

    def width(self) -> int:
        return (self.own_rows or 0) + (0 if self.sampled is None else self.sampled.shape[-1])


def grouped(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x [2, B, ...]`` as ``[2 * groups, rows, ...]``, zero rows appended when ``rows`` does not divide B."""
    size = x.shape[1]
    groups = -(-size // rows)
    if groups * rows > size:
        x = torch.nn.functional.pad(x, (0, 0, 0, groups * rows - size))
    return x.view(2 * groups, rows, *x.shape[2:])


def _bmm_into(dest: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """The product ``bmm(a [2 * groups, rows, D], b [2 * groups, D, W])`` in ``dest [2, B, W]`` (a slice of the
    logits), padding rows dropped: written in place (BLAS takes the logits' row stride) when no row is padding
    and the product is fp32, else computed and copied."""
    size, groups, rows = dest.shape[1], a.shape[0] // 2, a.shape[1]
    if groups * rows == size and a.dtype == dest.dtype:
        torch.bmm(a, b, out=dest.view(2 * groups, rows, -1))
        return
    block = torch.bmm(a, b)
    if groups * rows == size:
        dest.view(block.shape).copy_(block)
    else:
        dest.copy_(block.view(2, groups * rows, -1)[:, :size])


def _ungrouped(grad: torch.Tensor, rows: int) -> torch.Tensor:
    """The gradient slice ``[2, B, W]`` of a block as its product's ``[2 * groups, rows, W]``."""
    return grouped(grad, rows) if grad.shape[1] % rows else grad.reshape(-1, rows, grad.shape[-1])


def _low(grad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A block's gradient in ``dtype``: a contiguous copy in bf16 (whose bmm would copy a strided operand
    anyway), the strided slice itself in fp32 (which bmm reads in place)."""
    return grad.to(dtype, memory_format=torch.contiguous_format) if dtype != grad.dtype else grad


def _trim(x: torch.Tensor, size: int) -> torch.Tensor:
    """A product's ``[2 * groups, rows, D]`` as ``[2, size, D]`` (padding rows dropped)."""
    x = x.view(2, -1, x.shape[-1])
    return x if x.shape[1] == size else x[:, :size]


class _DotLogits(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        raw: torch.Tensor,
        blocks: Blocks,
        tables: tuple[torch.Tensor, ...],
        side_ids: tuple[torch.Tensor, ...],
        sinks: tuple[Gathered, ...] | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        size, dim = q.shape[1], q.shape[2]
        own, width = blocks.own_rows or 0, blocks.width()
        flat = torch.empty((2 * size, 1 + width), dtype=torch.float32, device=q.device)
        logits = flat.view(2, size, 1 + width)
        torch.sum(q * raw, -1, out=logits[..., 0])
        q_low = as_dtype(q, dtype)
        saved = [q, raw, q_low]
        if own:
            raw_low = as_dtype(raw, dtype)
            _bmm_into(logits[..., 1 : 1 + own], grouped(q_low, own), grouped(raw_low, own).transpose(1, 2))
            saved.append(raw_low)
        if blocks.sampled is not None:
            ids = blocks.sampled
            if len(tables) == 1:
                rows = tables[0].index_select(0, side_ids[0])
            else:
                rows = torch.stack([t.index_select(0, i) for t, i in zip(tables, side_ids, strict=True)])
            rows = as_dtype(rows, dtype).view(2 * ids.shape[1], ids.shape[2], dim)
            q_s = grouped(q_low, blocks.sampled_rows)
            _bmm_into(logits[..., 1 + own :], q_s, rows.transpose(1, 2))
            saved.append(rows)
        ctx.save_for_backward(*saved)
        ctx.blocks, ctx.sinks = blocks, sinks
        return flat

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        q, raw, q_low, *rest = ctx.saved_tensors
        blocks: Blocks = ctx.blocks
        size, own = q.shape[1], blocks.own_rows or 0
        grad = grad.view(2, size, -1) if grad.is_contiguous() else grad.reshape(2, size, -1)
        # each block's gradient in the product dtype, contiguous (a bf16 bmm copies strided operands itself)
        low = q_low.dtype
        d_q = d_raw = None
        if own:
            raw_low = rest.pop(0)
            g = _ungrouped(_low(grad[..., 1 : 1 + own], low), own)
            d_q = as_dtype(_trim(torch.bmm(g, grouped(raw_low, own)), size), torch.float32)
            d_raw = as_dtype(_trim(torch.bmm(g.transpose(1, 2), grouped(q_low, own)), size), torch.float32)
        if blocks.sampled is not None:
            (rows,) = rest
            g = _ungrouped(_low(grad[..., 1 + own :], low), blocks.sampled_rows)
            part = _trim(torch.bmm(g, rows), size)
            d_q = as_dtype(part, torch.float32) if d_q is None else d_q.add_(part)
            if ctx.sinks is not None:
                d_rows = torch.bmm(g.transpose(1, 2), grouped(q_low, blocks.sampled_rows))
                if len(ctx.sinks) == 1:
                    ctx.sinks[0].grad = d_rows.view(-1, q.shape[-1])
                else:
                    d_rows = d_rows.view(2, -1, q.shape[-1])
                    ctx.sinks[0].grad, ctx.sinks[1].grad = d_rows.unbind(0)
        g_pos = grad[..., :1]
        d_q = g_pos * raw if d_q is None else d_q.addcmul_(g_pos, raw)
        d_raw = g_pos * q if d_raw is None else d_raw.addcmul_(g_pos, q)
        return d_q, d_raw, None, None, None, None, None


def dot_logits(
    q: torch.Tensor,
    raw: torch.Tensor,
    blocks: Blocks,
    sources: list[tuple[TableKey, torch.Tensor]],
    gathered: list[Gathered] | None,
    bf16: bool,
) -> torch.Tensor:
    """fp32 logits ``[2B, 1 + K]`` (side 0's rows first) of queries ``q [2, B, D]`` against the true candidates
    ``raw [2, B, D]`` (column 0; and the own block) and the rows ``blocks.sampled`` of ``sources`` (one (key,
    table): both sides read it; two: side ``i`` from ``sources[i]``).  ``gathered`` (None: no gradient)
    receives one entry per table for the sampled rows, whose gradient ``[rows, D]`` (bf16 when ``bf16``) is set
    by backward."""
    if len(sources) > 1 and all(key == sources[0][0] for key, _ in sources):
        sources = sources[:1]  # both sides read one table: one gather, one gradient entry
    side_ids: tuple[torch.Tensor, ...] = ()
    sinks = None
    if blocks.sampled is not None:
        if len(sources) == 1:  # every id from the one table
            side_ids = (blocks.sampled.view(-1),)
        else:  # each side's from its own
            flat = blocks.sampled.reshape(2, -1)
            side_ids = (flat[0], flat[1])
        if gathered is not None and torch.is_grad_enabled():
            sinks = tuple(Gathered(key, ids) for (key, _), ids in zip(sources, side_ids, strict=True))
            gathered.extend(sinks)
    dtype = torch.bfloat16 if bf16 else torch.float32
    return _DotLogits.apply(q, raw, blocks, tuple(t for _, t in sources), side_ids, sinks, dtype)

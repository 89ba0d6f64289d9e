"""One batch: gather rows, score positives and shared negatives on both sides, loss, sparse updates.

A batch mixes relations.  Edges are grouped by (lhs type, rhs type) — usually one group.  Training batches
hold one group each and say which (the edge stream lays chunks out so, tbg/train/edge_stream.py): the step
never inspects device data to split a batch.  A batch without a group (validation) is split here.  Per group
the batch's own rows are autograd leaves, and each side is scored as

- target rhs: queries from θx against shared rhs candidates (in-batch entities + uniform samples),
- target lhs: queries from θy against shared lhs candidates,

with the model's query/candidate functions (the ones eval uses), both sides at once: with ``dot`` the whole
score matrix is one autograd function (:func:`tbg.train.dot_logits.dot_logits`: one batched product per block
of negatives); negatives equal to the true entity are masked, and
``relation.weight × edge weight × (loss_rhs + loss_lhs)`` is summed over the batch (PBG's reduction).
After ``backward`` the rows' gradients are coalesced per table and handed to the sparse optimizers: only
the rows the batch touched are read or written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from tbg import runtime
from tbg.config import Config, DataConfig, GlobalNegativesScope, InBatchScope
from tbg.model.losses import build_loss
from tbg.model.negatives import mask_chunked, mask_negatives, sample_uniform, select_in_batch
from tbg.model.optimizers import coalesce_tables
from tbg.model.scoring import RelationModel
from tbg.train.dot_logits import Blocks, dot_logits, grouped
from tbg.train.gathered_rows import Gathered, TableKey, candidate_scores


@dataclass
class Batch:
    lhs: torch.Tensor  # offsets in the lhs partition
    rhs: torch.Tensor
    rel: torch.Tensor
    weight: torch.Tensor | None = None
    group: int | None = None  # index in relation_groups' list when every edge is of that group; None: mixed

    def __len__(self) -> int:
        return int(self.lhs.shape[0])


def relation_groups(relations: list) -> tuple[list[tuple[str, str]], list[int]]:  # noqa: ANN001
    """The (lhs type, rhs type) groups of ``model.relations`` (sorted) and each relation's group index."""
    groups = sorted({(r.lhs, r.rhs) for r in relations})
    return groups, [groups.index((r.lhs, r.rhs)) for r in relations]


@dataclass(frozen=True)
class Negatives:
    """A data section's negative sampling: ``in_batch`` / ``uniform`` counts and train_data's in_batch_scope,
    global_negatives_scope and global_negatives_chunks_per_draw."""

    in_batch: int
    uniform: int
    scope: InBatchScope = InBatchScope.relation
    global_scope: GlobalNegativesScope = GlobalNegativesScope.batch
    chunks_per_draw: int = 1

    @classmethod
    def of(cls, data: DataConfig, relation_free: bool = True) -> Negatives:
        """``relation_free``: candidates never pass through a relation's operator (chunk scope can score them)."""
        scope, in_batch = data.negative_scheme(relation_free)  # in_batch_scope auto resolved
        return cls(in_batch, data.global_negatives, scope, *data.uniform_scheme(relation_free))


@dataclass
class StepResult:
    loss: torch.Tensor  # summed (weighted) loss of the batch, detached: with grad it is already backpropagated
    gathered: list[Gathered]


class BatchScorer:
    """Computes a batch's loss; ``tables(etype, side)`` resolves the resident partition of the bucket."""

    def __init__(self, cfg: Config, model: RelationModel, device: torch.device, bf16: bool) -> None:
        self.model = model
        self.device = device
        self.loss = build_loss(cfg.model)
        rels = cfg.model.relations
        self.rel_weight = torch.tensor([r.weight for r in rels], dtype=torch.float32, device=device)
        self.unit_weights = all(r.weight == 1 for r in rels)  # no relation weight to apply
        self.groups, rel_group = relation_groups(rels)
        self.rel_group = torch.tensor(rel_group, device=device)
        self.bf16 = bf16
        self.relation_free = not any(model.candidates_need_relation(t) for t in ("lhs", "rhs"))  # type: ignore[arg-type]
        self.tf32 = device.type == "cuda" and cfg.runtime.enable_tensorfloat32  # scoped to the scorer's products

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 matmuls for the score GEMMs (CPU with native bf16, or CUDA with enable_amp)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def __call__(
        self,
        batch: Batch,
        tables: Callable[[str, str], tuple[TableKey, torch.Tensor]],
        in_batch: int,
        uniform: int,
        generator: torch.Generator,
        grad: bool = True,
        scope: InBatchScope = InBatchScope.relation,
        global_scope: GlobalNegativesScope = GlobalNegativesScope.batch,
        chunks_per_draw: int = 1,
    ) -> StepResult:
        """Loss of ``batch``; ``scope``, ``global_scope`` and ``chunks_per_draw`` are train_data's
        in_batch_scope, global_negatives_scope and global_negatives_chunks_per_draw."""
        negatives = Negatives(in_batch, uniform, scope, global_scope, chunks_per_draw)
        with torch.set_grad_enabled(grad), runtime.tf32(self.tf32):
            return self._call(batch, tables, negatives, generator, grad)

    def score(
        self,
        batch: Batch,
        tables: Callable[[str, str], tuple[TableKey, torch.Tensor]],
        data: DataConfig,
        generator: torch.Generator,
        grad: bool = True,
    ) -> StepResult:
        """Loss of ``batch`` with the negatives of a data section (train_data or validation_data)."""
        with torch.set_grad_enabled(grad), runtime.tf32(self.tf32):
            return self._call(batch, tables, Negatives.of(data, self.relation_free), generator, grad)

    def _call(self, batch, tables, negatives, generator, grad) -> StepResult:  # noqa: ANN001
        gathered: list[Gathered] = []
        if len(self.groups) == 1 or batch.group is not None:
            types = self.groups[batch.group or 0]
            return StepResult(self._group(types, batch, tables, negatives, generator, grad, gathered), gathered)
        # a mixed batch (validation): split by group, with host syncs (outside the training step)
        group_of = self.rel_group[batch.rel]
        total = torch.zeros((), device=self.device)
        for g in torch.unique(group_of).tolist():
            rows = torch.nonzero(group_of == g).squeeze(1)
            sub = Batch(
                batch.lhs[rows],
                batch.rhs[rows],
                batch.rel[rows],
                None if batch.weight is None else batch.weight[rows],
            )
            total = total + self._group(self.groups[g], sub, tables, negatives, generator, grad, gathered)
        return StepResult(total, gathered)

    def _gather(self, table: torch.Tensor, ids: torch.Tensor, grad: bool) -> torch.Tensor:
        """Rows ``ids`` (any shape) of ``table`` as fp32 ``[*ids.shape, D]``."""
        rows = table.index_select(0, ids.view(-1) if ids.is_contiguous() else ids.reshape(-1))
        rows = rows if ids.dim() == 1 else rows.view(*ids.shape, table.shape[-1])
        rows = rows.float() if rows.dtype != torch.float32 else rows
        return rows.requires_grad_(grad)

    def _leaf(
        self, key: TableKey, table: torch.Tensor, ids: torch.Tensor, grad: bool, gathered: list[Gathered]
    ) -> torch.Tensor:
        """Rows ``ids`` of ``table`` as an autograd leaf whose gradient the optimizer reads from ``gathered``
        (the batch's own rows; candidate rows too when they go through a generic comparator)."""
        leaf = self._gather(table, ids, grad)
        if grad and ids.numel():
            gathered.append(Gathered(key, ids.reshape(-1), leaf=leaf))
        return leaf

    def _generic_logits(
        self,
        q: torch.Tensor,
        raw: torch.Tensor,
        blocks: Blocks,
        sources: list[tuple[TableKey, torch.Tensor]],
        grad: bool,
        gathered: list[Gathered],
    ) -> torch.Tensor:
        """:func:`dot_logits`'s logits for any comparator, through autograd: the sampled rows become leaves, and
        each block is one ``comparator.matrix`` of row groups (bf16 under autocast, widened in the concat)."""
        cmp, size = self.model.comparator, q.shape[1]
        cand = cmp.prepare(raw)
        parts = [cmp.pairwise(q, cand).float().unsqueeze(-1)]
        with self.autocast():
            if blocks.own_rows:
                own = cmp.matrix(grouped(q, blocks.own_rows), grouped(cand, blocks.own_rows))
                parts.append(own.view(2, -1, own.shape[-1])[:, :size])
            if blocks.sampled is not None:
                ids, dim = blocks.sampled, sources[0][1].shape[-1]
                if all(key == sources[0][0] for key, _ in sources):
                    key, table = sources[0]
                    rows = self._leaf(key, table, ids.reshape(-1), grad, gathered).view(*ids.shape, dim)
                else:
                    rows = torch.stack([
                        self._leaf(key, table, part.reshape(-1), grad, gathered).view(*part.shape, dim)
                        for (key, table), part in zip(sources, ids, strict=True)
                    ])  # fmt: skip
                drawn = cmp.matrix(grouped(q, blocks.sampled_rows), cmp.prepare(rows).flatten(0, 1))
                parts.append(drawn.view(2, -1, drawn.shape[-1])[:, :size])
        return torch.cat(parts, -1).view(2 * size, -1)

    def _group(
        self,
        types: tuple[str, str],
        batch: Batch,
        tables: Callable[[str, str], tuple[TableKey, torch.Tensor]],
        negatives: Negatives,
        generator: torch.Generator,
        grad: bool,
        gathered: list[Gathered],
    ) -> torch.Tensor:
        """Loss of one (lhs type, rhs type) group: per side, queries against shared candidate rows.

        relation/batch scope: candidates = the selected in-batch entities + ``uniform`` samples, shared by
        the whole batch.  chunk scope: PBG's chunks, each against its own positives and its draw's uniform
        samples (:class:`~tbg.train.dot_logits.Blocks`, :func:`~tbg.model.negatives.mask_chunked`).  Both
        sides run as one: their queries, candidates and scores are stacked (index 0 predicts rhs, index 1
        lhs), so a step is one product per kind of block, one mask, one loss and one backward, whatever the
        tables; only relation-aware rhs candidates (``relation_sides: rhs``) are scored per side (:meth:`_per_side`).
        """
        size, in_batch, uniform = len(batch), negatives.in_batch, negatives.uniform
        if size == 0:
            return torch.zeros((), device=self.device)
        # chunk scope without in-batch negatives is one chunk of uniform samples: the shared path below
        chunked = negatives.scope == InBatchScope.chunk and in_batch > 0 and size > 0
        per_relation = negatives.scope == InBatchScope.relation
        every = not chunked and 0 < size <= in_batch  # the in-batch negatives are the whole batch, in order
        sel, sel_rel = (
            (None, None)
            if chunked or every
            else select_in_batch(
                batch.rel if per_relation else torch.zeros_like(batch.rel),
                in_batch,
                generator,
                self.rel_weight.shape[0] if per_relation else 1,
            )
        )
        if every:
            sel_rel = batch.rel
        chunk = min(in_batch, size)
        n_chunks = -(-size // chunk) if chunked else 1
        per_draw = (
            n_chunks
            if negatives.global_scope == GlobalNegativesScope.batch
            else min(negatives.chunks_per_draw, n_chunks)
        )
        draws = -(-n_chunks // per_draw)
        (key_l, table_l), (key_r, table_r) = tables(types[0], "lhs"), tables(types[1], "rhs")
        uni_l = sample_uniform(draws * uniform, table_l.shape[0], generator, self.device)
        uni_r = sample_uniform(draws * uniform, table_r.shape[0], generator, self.device)
        true_ids = torch.stack([batch.rhs, batch.lhs])  # index 0 predicts rhs, 1 lhs
        bound = max(table_l.shape[0], table_r.shape[0], self.rel_weight.shape[0])  # every id and relation below
        # the true candidates' rows (scored as the in-batch ones too) as autograd leaves: one gather per table
        if key_l == key_r:
            raw = self._leaf(key_r, table_r, true_ids, grad, gathered)
        else:
            raw = torch.stack([self._leaf(key_r, table_r, batch.rhs, grad, gathered),
                               self._leaf(key_l, table_l, batch.lhs, grad, gathered)])  # fmt: skip
        if self.model.candidates_need_relation("rhs"):
            rows = {"lhs": (key_l, table_l, raw[1], uni_l), "rhs": (key_r, table_r, raw[0], uni_r)}
            return self._per_side(batch, rows, sel, sel_rel if per_relation else None, grad, gathered)
        q = self.model.queries(raw.flip(0), batch.rel)  # the known rows: lhs for side 0, rhs for side 1
        sources = [(key_r, table_r), (key_l, table_l)]
        uni = torch.stack([uni_r, uni_l])
        if chunked:
            pad = n_chunks * chunk - size
            own = torch.nn.functional.pad(true_ids, (0, pad), value=-1) if pad else true_ids
            samples = uni.view(2, draws, -1) if uniform else None
            blocks = Blocks(chunk, samples, per_draw * chunk if draws > 1 else size)
            masker = partial(mask_chunked, true_ids=true_ids, cand_ids=own.view(2, n_chunks, chunk), chunk=chunk,
                             pad_columns=pad, shared_ids=samples, chunks_per_draw=per_draw, id_bound=bound)  # fmt: skip
        else:
            sel_ids = true_ids if every else true_ids[:, sel]
            sampled = uni if every else torch.cat([sel_ids, uni], 1)
            blocks = Blocks(size if every else None, sampled.view(2, 1, -1) if sampled.shape[-1] else None, size)
            masker = partial(mask_negatives, true_ids=true_ids, true_rel=batch.rel, batch_ids=sel_ids,
                             batch_rel=sel_rel if per_relation else None, uniform_ids=uni, id_bound=bound)  # fmt: skip
        if self.model.comparator.name == "dot":
            logits = dot_logits(q, raw, blocks, sources, gathered if grad else None, self.bf16)
        else:
            logits = self._generic_logits(q, raw, blocks, sources, grad, gathered)
        return self._loss(logits, masker, batch, grad)  # [2B, 1 + K], side 0's rows first

    def _loss(self, logits: torch.Tensor, masker: Callable, batch: Batch, grad: bool) -> torch.Tensor:
        """Mask ``logits [N, 1 + K]`` (the only copy of the scores; N = B rows of one side, or 2B of both,
        side 0 first) in place, apply the loss, weight and sum it, and backpropagate it when ``grad``; returns
        it detached."""
        size = len(batch)
        with torch.no_grad():
            # masked scores become MASKED in place, outside autograd: every loss has an exactly zero
            # gradient there, so recording the write (a full copy of the scores in backward) buys nothing
            sides = logits if logits.shape[0] == size else logits.view(-1, size, logits.shape[-1])
            count = masker(sides[..., 1:], count=self.loss.needs_count)[1]
        per_edge = self.loss(logits, None if count is None else count.view(-1))
        loss = self._weighted(per_edge, batch)
        if grad:
            # no explicit seed: torch.autograd checks a given one's shape through torch.fx's symbolic shapes,
            # which imports sympy (resident memory and Python work per step)
            loss.backward()
        return loss.detach()

    def _per_side(
        self,
        batch: Batch,
        rows: dict[str, tuple[TableKey, torch.Tensor, torch.Tensor, torch.Tensor]],
        sel: torch.Tensor | None,
        sel_rel: torch.Tensor | None,
        grad: bool,
        gathered: list[Gathered],
    ) -> torch.Tensor:
        """relation_sides rhs with relation-aware rhs candidates (one chunk only, as the config check
        guarantees): each side on its own, rhs candidates through the comparator per relation.  ``sel`` None:
        the whole batch is the in-batch negatives."""
        total = torch.zeros((), device=self.device)
        for target, known_side, true_ids in (("rhs", "lhs", batch.rhs), ("lhs", "rhs", batch.lhs)):
            key, table, cand, uni = rows[target]
            q = self.model.query(target, rows[known_side][2], batch.rel)  # type: ignore[arg-type]
            pos = self.model.comparator.pairwise(q, self.model.candidates_per_row(target, cand, batch.rel))  # type: ignore[arg-type]
            sel_ids = true_ids if sel is None else true_ids[sel]
            ids = torch.cat([sel_ids, uni])
            if self.model.comparator.name == "dot" and not self.model.candidates_need_relation(target):  # type: ignore[arg-type]
                neg = candidate_scores(q, [(key, table)], ids, gathered if grad else None, self.bf16)
            else:
                leaf = self._leaf(key, table, ids, grad, gathered)
                with self.autocast():
                    neg = self.model.negative_scores(target, q, batch.rel, leaf)  # type: ignore[arg-type]
            masker = partial(mask_negatives, true_ids=true_ids, true_rel=batch.rel, batch_ids=sel_ids,
                             batch_rel=sel_rel, uniform_ids=uni,
                             id_bound=max(table.shape[0], self.rel_weight.shape[0]))  # fmt: skip
            total = total + self._loss(torch.cat([pos.float().unsqueeze(1), neg], dim=1), masker, batch, grad)
        return total

    def _weighted(self, per_edge: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The sum of ``per_edge [N]`` (one side's B edges, or both sides', side 0 first), each edge weighted by
        its relation's and its own weight."""
        if self.unit_weights and batch.weight is None:
            return per_edge.sum()
        weight = self.rel_weight[batch.rel]
        if batch.weight is not None:
            weight = weight * batch.weight
        return (per_edge.view(-1, len(batch)) * weight).sum()


def coalesced_grads(
    gathered: list[Gathered],
    needs_live: Callable[[TableKey], bool] | None = None,
    rows_of: Callable[[TableKey], int] | None = None,
) -> dict[TableKey, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Per table: touched rows, their summed gradients and which slots are live (:func:`coalesce`: no dense
    table-sized gradient, no host sync); ``needs_live(key)`` False: None for the flags (an optimizer that never
    reads them; default: every table gets them).  ``rows_of(key)``: the table's row count; given, the tables
    whose gradients have one width are coalesced together (:func:`coalesce_tables`: one sort for all)."""
    by_key: dict[TableKey, list[Gathered]] = {}
    for g in gathered:
        by_key.setdefault(g.key, []).append(g)
    parts = {key: ([g.ids for g in items], [g.gradient() for g in items]) for key, items in by_key.items()}
    # tables coalesced together: those of one gradient width when row counts are known, else each on its own
    together: dict[object, list[TableKey]] = {}
    for key, (_, grads) in parts.items():
        together.setdefault(grads[0].shape[1] if rows_of is not None else key, []).append(key)
    out = {}
    for keys in together.values():
        offsets = [0]
        for key in keys[:-1]:
            offsets.append(offsets[-1] + rows_of(key))  # type: ignore[misc]
        live = any(needs_live is None or needs_live(key) for key in keys)
        for key, result in zip(keys, coalesce_tables([parts[k] for k in keys], offsets, live=live), strict=True):
            out[key] = result if needs_live is None or needs_live(key) else (result[0], result[1], None)
    return out

"""One batch: gather rows, score positives and shared negatives on both sides, loss, sparse updates.

A batch mixes relations.  Edges are grouped by (lhs type, rhs type) — usually one group.  Per group the
batch's own rows are autograd leaves, and each side is scored as

- target rhs: queries from θx against shared rhs candidates (in-batch entities + uniform samples),
- target lhs: queries from θy against shared lhs candidates,

with the model's query/candidate functions (the ones eval uses) and one (batched) product per side
(:func:`tbg.train.gathered_rows.candidate_scores`); negatives equal to the true entity are masked, and
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
from tbg.model.optimizers import coalesce
from tbg.model.scoring import RelationModel
from tbg.train.gathered_rows import Gathered, TableKey, candidate_scores


@dataclass
class Batch:
    lhs: torch.Tensor  # offsets in the lhs partition
    rhs: torch.Tensor
    rel: torch.Tensor
    weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.lhs.shape[0])


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
        self.groups: list[tuple[str, str]] = sorted({(r.lhs, r.rhs) for r in rels})
        self.rel_group = torch.tensor([self.groups.index((r.lhs, r.rhs)) for r in rels], device=device)
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
        if len(self.groups) == 1:
            loss = self._group(self.groups[0], batch, tables, negatives, generator, grad, gathered)
            return StepResult(loss, gathered)
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
        rows = torch.nn.functional.embedding(ids, table)  # a faster row gather than index_select
        rows = rows.float() if rows.dtype != torch.float32 else rows
        return rows.requires_grad_(grad)

    def _leaf(
        self, key: TableKey, table: torch.Tensor, ids: torch.Tensor, grad: bool, gathered: list[Gathered]
    ) -> torch.Tensor:
        """Rows ``ids`` of ``table`` as an autograd leaf whose gradient the optimizer reads from ``gathered``
        (the batch's own rows; candidate rows too when they go through a generic comparator)."""
        leaf = self._gather(table, ids, grad)
        if grad and ids.numel():
            gathered.append(Gathered(key, ids, leaf=leaf))
        return leaf

    def _shared_scores(
        self,
        target: str,
        queries: torch.Tensor,
        rel: torch.Tensor,
        key: TableKey,
        table: torch.Tensor,
        ids: torch.Tensor,
        grad: bool,
        gathered: list[Gathered],
    ) -> torch.Tensor:
        """Scores ``[C, S, K]`` of prepared queries ``[C, S, D]`` against candidate rows ``ids [C, K]`` (``[S, K]``
        from ``[S, D]`` and ``[K]``: one candidate set shared by the whole batch); bf16 when the products run in
        bf16 (they are rounded to it anyway), widened where they join the fp32 logits.

        With ``dot`` and relation-free candidates (the common case) this is :func:`candidate_scores`: one
        batched product whose backward sends the rows' gradient straight to ``gathered``.  Otherwise the rows
        become a leaf and go through the model's comparator (cos/l2), or per relation (relation_sides rhs
        with a relation-aware operator; one chunk only, as the config check guarantees).
        """
        if self.model.comparator.name == "dot" and not self.model.candidates_need_relation(target):  # type: ignore[arg-type]
            return candidate_scores(queries, table, ids, key, gathered if grad else None, self.bf16)
        rows = self._leaf(key, table, ids.reshape(-1), grad, gathered)
        with self.autocast():
            if self.model.candidates_need_relation(target):  # type: ignore[arg-type]
                out = self.model.negative_scores(target, queries, rel, rows)  # type: ignore[arg-type]
            else:
                cand = self.model.candidates(target, rows.view(*ids.shape, rows.shape[-1]))  # type: ignore[arg-type]
                out = self.model.comparator.matrix(queries, cand)
        return out

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
        the whole batch.  chunk scope: see :meth:`_chunk_negatives`.
        """
        size, in_batch, uniform = len(batch), negatives.in_batch, negatives.uniform
        # chunk scope without in-batch negatives is one chunk of uniform samples: the shared path below
        chunked = negatives.scope == InBatchScope.chunk and in_batch > 0 and size > 0
        per_relation = negatives.scope == InBatchScope.relation
        sel, sel_rel = (
            (None, None)
            if chunked
            else select_in_batch(
                batch.rel if per_relation else torch.zeros_like(batch.rel),
                in_batch,
                generator,
                self.rel_weight.shape[0] if per_relation else 1,
            )
        )
        chunk = min(in_batch, size)
        n_chunks = -(-size // chunk) if chunked else 1
        per_draw = (
            n_chunks
            if negatives.global_scope == GlobalNegativesScope.batch
            else min(negatives.chunks_per_draw, n_chunks)
        )
        draws = -(-n_chunks // per_draw)
        # side -> (key, table, the batch's rows as a leaf, that side's uniform samples)
        rows: dict[str, tuple[TableKey, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for side, etype, ids in (("lhs", types[0], batch.lhs), ("rhs", types[1], batch.rhs)):
            key, table = tables(etype, side)
            uni = sample_uniform(draws * uniform, table.shape[0], generator, self.device)
            rows[side] = (key, table, self._leaf(key, table, ids, grad, gathered), uni)
        total = torch.zeros((), device=self.device)
        for target, known_side, true_ids in (("rhs", "lhs", batch.rhs), ("lhs", "rhs", batch.lhs)):
            key, table, cand, uni = rows[target]
            known = rows[known_side][2]
            q = self.model.query(target, known, batch.rel)  # type: ignore[arg-type]
            pos = self.model.comparator.pairwise(q, self.model.candidates_per_row(target, cand, batch.rel))  # type: ignore[arg-type]
            if chunked:
                blocks, masker = self._chunk_negatives(
                    target, q, true_ids, batch.rel, key, table, uni.view(draws, -1), chunk, per_draw, grad, gathered
                )
            else:
                sel_ids = true_ids[sel]
                cand_ids = torch.cat([sel_ids, uni])
                blocks = [self._shared_scores(target, q, batch.rel, key, table, cand_ids, grad, gathered)]
                masker = partial(mask_negatives, true_ids=true_ids, true_rel=batch.rel, batch_ids=sel_ids,
                                 batch_rel=sel_rel if per_relation else None, uniform_ids=uni)  # fmt: skip
            logits = torch.cat([pos.float().unsqueeze(1), *blocks], dim=1)  # the only copy of the scores
            with torch.no_grad():
                # masked scores become MASKED in place, outside autograd: every loss has an exactly zero
                # gradient there, so recording the write (a full copy of the scores in backward) buys nothing
                count = masker(logits[:, 1:])[1]
            side = self._weighted(self.loss(logits, count), batch)
            if grad:  # backward per side: only one side's score matrices are alive at a time
                side.backward()
            total = total + side.detach()
        return total

    def _chunk_negatives(
        self,
        target: str,
        q: torch.Tensor,
        true_ids: torch.Tensor,
        rel: torch.Tensor,
        key: TableKey,
        table: torch.Tensor,
        samples: torch.Tensor,
        chunk: int,
        per_draw: int,
        grad: bool,
        gathered: list[Gathered],
    ) -> tuple[list[torch.Tensor], Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
        """PBG's batched negatives: score blocks (``[B, S]`` and ``[B, G]``, or one ``[B, S + G]``) and the
        function that masks their concatenation in place and counts each row's valid negatives.

        The batch is cut into C chunks of S = ``chunk`` edges; each edge's negatives are the other positives
        of its chunk (any relation: chunk scope needs relation-free candidates, checked with the config) and G
        uniform samples of its chunk's *draw*: ``samples`` [draws, G] holds one draw per ``per_draw``
        consecutive chunks (1: PBG exactly, one ``[C, S, D] x [C, D, S + G]`` product over C·G sampled rows;
        more: a small ``[C, S, D] x [C, D, S]`` in-batch product plus one ``[K·S, D] x [D, G]`` product per draw).
        """
        size = true_ids.shape[0]
        n_chunks = -(-size // chunk)
        pad = n_chunks * chunk - size
        draws = samples.shape[0]
        own = torch.nn.functional.pad(true_ids, (0, pad), value=-1).view(n_chunks, chunk)
        fetch = torch.where(own < 0, true_ids[-1], own) if pad else own  # padding: any row, its scores are masked
        qc = (torch.nn.functional.pad(q, (0, 0, 0, pad)) if pad else q).view(n_chunks, chunk, -1)
        if per_draw == 1:
            ids = torch.cat([fetch, samples], 1)
            neg = self._shared_scores(target, qc, rel, key, table, ids, grad, gathered).view(n_chunks * chunk, -1)
            neg = neg[:size] if pad else neg  # a slice's backward zero-fills a full-size gradient
            cand_ids = torch.cat([own, samples], 1)
            return [neg], partial(mask_chunked, true_ids=true_ids, cand_ids=cand_ids, chunk=chunk, pad_columns=pad)
        neg = self._shared_scores(target, qc, rel, key, table, fetch, grad, gathered).view(n_chunks * chunk, chunk)
        blocks = [neg[:size] if pad else neg]
        if samples.shape[1]:
            rows = draws * per_draw * chunk
            qd = torch.nn.functional.pad(q, (0, 0, 0, rows - size)) if rows > size else q
            drawn = self._shared_scores(
                target, qd.view(draws, per_draw * chunk, -1), rel, key, table, samples, grad, gathered
            ).view(rows, -1)
            blocks.append(drawn[:size] if rows > size else drawn)
        masker = partial(mask_chunked, true_ids=true_ids, cand_ids=own, chunk=chunk, pad_columns=pad,
                         shared_ids=samples, chunks_per_draw=per_draw)  # fmt: skip
        return blocks, masker

    def _weighted(self, per_edge: torch.Tensor, batch: Batch) -> torch.Tensor:
        weight = self.rel_weight[batch.rel]
        if batch.weight is not None:
            weight = weight * batch.weight
        return (per_edge * weight).sum()


def coalesced_grads(gathered: list[Gathered]) -> dict[TableKey, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per table: touched rows, their summed gradients and which slots are live (:func:`coalesce`: no dense
    table-sized gradient, no host sync)."""
    by_key: dict[TableKey, list[Gathered]] = {}
    for g in gathered:
        by_key.setdefault(g.key, []).append(g)
    out = {}
    for key, items in by_key.items():
        out[key] = coalesce([g.ids for g in items], [g.gradient() for g in items])
    return out

"""One batch: gather rows, score positives and shared negatives on both sides, loss, sparse updates.

A batch mixes relations.  Edges are grouped by (lhs type, rhs type) — usually one group — and each group
gathers its rows with ``index_select`` into autograd leaves, scores

- target rhs: queries from θx against [in-batch rhs, G uniform rhs of the partition],
- target lhs: queries from θy against [in-batch lhs, G uniform lhs of the partition],

through :meth:`RelationModel.score_batch` (the same score function eval uses), masks negatives equal to
the true entity, and sums ``relation.weight × edge weight × (loss_rhs + loss_lhs)`` over the batch
(PBG's reduction).  After ``backward`` the leaves' gradients are coalesced per table and handed to the
sparse optimizers: only the batch's rows are read or written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tbg.config import Config
from tbg.model.losses import masked_losses
from tbg.model.negatives import mask_chunked, mask_negatives, sample_uniform, select_in_batch
from tbg.model.optimizers import coalesce
from tbg.model.scoring import RelationModel

TableKey = tuple[str, int]  # (entity type, partition)


@dataclass
class Batch:
    lhs: torch.Tensor  # offsets in the lhs partition
    rhs: torch.Tensor
    rel: torch.Tensor
    weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.lhs.shape[0])


@dataclass
class Gathered:
    key: TableKey
    ids: torch.Tensor
    leaf: torch.Tensor


@dataclass
class StepResult:
    loss: torch.Tensor  # summed (weighted) loss of the batch
    gathered: list[Gathered]


class BatchScorer:
    """Computes a batch's loss; ``tables(etype, side)`` resolves the resident partition of the bucket."""

    def __init__(self, cfg: Config, model: RelationModel, device: torch.device, bf16: bool) -> None:
        self.model = model
        self.device = device
        self.loss = str(cfg.model.loss)
        self.margin = cfg.model.margin
        rels = cfg.model.relations
        self.rel_weight = torch.tensor([r.weight for r in rels], dtype=torch.float32, device=device)
        self.groups: list[tuple[str, str]] = sorted({(r.lhs, r.rhs) for r in rels})
        self.rel_group = torch.tensor([self.groups.index((r.lhs, r.rhs)) for r in rels], device=device)
        self.bf16 = bf16
        self.scope = "relation"

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
        scope: str = "relation",
    ) -> StepResult:
        """Loss of ``batch``; ``scope`` is train_data.in_batch_scope (relation | batch | chunk)."""
        self.scope = scope
        with torch.set_grad_enabled(grad):
            return self._call(batch, tables, in_batch, uniform, generator, grad)

    def _call(self, batch, tables, in_batch, uniform, generator, grad) -> StepResult:  # noqa: ANN001
        gathered: list[Gathered] = []
        if len(self.groups) == 1:
            loss = self._group(self.groups[0], batch, tables, in_batch, uniform, generator, grad, gathered)
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
            total = total + self._group(self.groups[g], sub, tables, in_batch, uniform, generator, grad, gathered)
        return StepResult(total, gathered)

    def _gather(self, key: TableKey, table: torch.Tensor, ids: torch.Tensor, grad: bool) -> torch.Tensor:
        rows = table.index_select(0, ids)
        rows = rows.float() if rows.dtype != torch.float32 else rows
        return rows.requires_grad_(grad)

    def _gather_sides(
        self,
        types: tuple[str, str],
        batch: Batch,
        tables: Callable[[str, str], tuple[TableKey, torch.Tensor]],
        uniform: int,
        generator: torch.Generator,
        grad: bool,
        gathered: list[Gathered],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``uniform`` samples per side and gather [positives; samples] rows as autograd leaves."""
        key_l, table_l = tables(types[0], "lhs")
        key_r, table_r = tables(types[1], "rhs")
        uni_l = sample_uniform(uniform, table_l.shape[0], generator, self.device)
        uni_r = sample_uniform(uniform, table_r.shape[0], generator, self.device)
        ids_l = torch.cat([batch.lhs, uni_l])
        ids_r = torch.cat([batch.rhs, uni_r])
        x_l = self._gather(key_l, table_l, ids_l, grad)
        x_r = self._gather(key_r, table_r, ids_r, grad)
        if grad:
            gathered += [Gathered(key_l, ids_l, x_l), Gathered(key_r, ids_r, x_r)]
        return uni_l, uni_r, x_l, x_r

    def _group(
        self,
        types: tuple[str, str],
        batch: Batch,
        tables: Callable[[str, str], tuple[TableKey, torch.Tensor]],
        in_batch: int,
        uniform: int,
        generator: torch.Generator,
        grad: bool,
        gathered: list[Gathered],
    ) -> torch.Tensor:
        if self.scope == "chunk":
            return self._group_chunked(types, batch, tables, in_batch, uniform, generator, grad, gathered)
        size = len(batch)
        uni_l, uni_r, x_l, x_r = self._gather_sides(types, batch, tables, uniform, generator, grad, gathered)
        theta_x, theta_y = x_l[:size], x_r[:size]
        per_relation = self.scope == "relation"
        groups = batch.rel if per_relation else torch.zeros_like(batch.rel)
        sel = select_in_batch(groups, in_batch, generator)
        sel_rel = batch.rel[sel] if per_relation else None
        with self.autocast():
            pos_r, neg_r = self.model.score_batch(
                "rhs", theta_x, theta_y, batch.rel, torch.cat([theta_y[sel], x_r[size:]])
            )
            pos_l, neg_l = self.model.score_batch(
                "lhs", theta_y, theta_x, batch.rel, torch.cat([theta_x[sel], x_l[size:]])
            )
        neg_r, count_r = mask_negatives(neg_r, batch.rhs, batch.rel, batch.rhs[sel], sel_rel, uni_r)
        neg_l, count_l = mask_negatives(neg_l, batch.lhs, batch.rel, batch.lhs[sel], sel_rel, uni_l)
        per_edge = masked_losses(self.loss, pos_r, neg_r, count_r, self.margin) + masked_losses(
            self.loss, pos_l, neg_l, count_l, self.margin
        )
        return self._weighted(per_edge, batch)

    def _weighted(self, per_edge: torch.Tensor, batch: Batch) -> torch.Tensor:
        weight = self.rel_weight[batch.rel]
        if batch.weight is not None:
            weight = weight * batch.weight
        return (per_edge * weight).sum()

    def _group_chunked(
        self,
        types: tuple[str, str],
        batch: Batch,
        tables: Callable[[str, str], tuple[TableKey, torch.Tensor]],
        in_batch: int,
        uniform: int,
        generator: torch.Generator,
        grad: bool,
        gathered: list[Gathered],
    ) -> torch.Tensor:
        """PBG's batched negatives: chunks of ``in_batch`` edges, each scored against its own positives and
        its own ``uniform`` samples with one batched matrix product ([C, chunk, D] x [C, D, chunk + G]).

        Relations are mixed inside a chunk (PBG's dynamic mode), so candidates must not depend on the
        relation (relation_sides both, or no rhs operator; checked when the config is loaded).  With
        ``in_batch = 0`` the whole batch is one chunk sharing its uniform samples.
        """
        size = len(batch)
        chunk = min(in_batch, size) if in_batch > 0 else size
        n_chunks = -(-size // chunk)
        pad = n_chunks * chunk - size
        uni_l, uni_r, x_l, x_r = self._gather_sides(types, batch, tables, n_chunks * uniform, generator, grad, gathered)
        theta_x, theta_y = x_l[:size], x_r[:size]
        total = torch.zeros((), device=self.device)
        for target, known, true_ids, cand, uni_x, uni_ids in (
            ("rhs", theta_x, batch.rhs, theta_y, x_r[size:], uni_r),
            ("lhs", theta_y, batch.lhs, theta_x, x_l[size:], uni_l),
        ):
            dim = known.shape[1]
            in_ids = true_ids if in_batch > 0 else true_ids[:0]
            if in_batch > 0:
                in_ids = torch.nn.functional.pad(in_ids, (0, pad), value=-1).view(n_chunks, chunk)
                cand_ids = torch.cat([in_ids, uni_ids.view(n_chunks, uniform)], dim=1)
            else:
                cand_ids = uni_ids.view(1, uniform)
            with self.autocast():
                q = self.model.query(target, known, batch.rel)
                pos = self.model.comparator.pairwise(q, self.model.candidates_per_row(target, cand, batch.rel))
                qc = torch.nn.functional.pad(q, (0, 0, 0, pad)).view(n_chunks, chunk, dim)
                # two products (own positives, own uniform samples) instead of one over a concatenated copy
                blocks = [
                    self.model.comparator.matrix(qc, self.model.candidates(target, uni_x.view(n_chunks, uniform, dim)))
                ]
                if in_batch > 0:
                    own = torch.nn.functional.pad(cand, (0, 0, 0, pad)).view(n_chunks, chunk, dim)
                    blocks.insert(0, self.model.comparator.matrix(qc, self.model.candidates(target, own)))
                neg = (torch.cat(blocks, dim=2) if len(blocks) > 1 else blocks[0]).reshape(n_chunks * chunk, -1)[:size]
            neg, count = mask_chunked(neg, true_ids, cand_ids, chunk, pad if in_batch > 0 else 0)
            total = total + masked_losses(self.loss, pos, neg, count, self.margin)
        return self._weighted(total, batch)


def coalesced_grads(gathered: list[Gathered]) -> dict[TableKey, tuple[torch.Tensor, torch.Tensor]]:
    """Per table: unique touched rows and their summed gradients (no dense table-sized gradient)."""
    by_key: dict[TableKey, list[Gathered]] = {}
    for g in gathered:
        by_key.setdefault(g.key, []).append(g)
    out = {}
    for key, items in by_key.items():
        ids = torch.cat([g.ids for g in items])
        grads = torch.cat([g.leaf.grad for g in items])
        out[key] = coalesce(ids, grads)
    return out

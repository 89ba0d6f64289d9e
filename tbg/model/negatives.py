"""Negative sampling without per-edge Python: in-batch (per relation) and uniform (per partition).

In-batch negatives for a batch are a set of batch *positions*: per relation present, up to ``S`` of that
relation's edges chosen at random, shared by all its edges (TwHIN/PBG batch negatives; they follow the
degree distribution).  With ``S`` at least the relation's count, all of its batch edges are used, like a
PBG chunk spanning the batch.  Uniform negatives are ``G`` offsets drawn uniformly from the resident
partition, shared by the whole batch.
"""

from __future__ import annotations

import torch


def select_in_batch(
    rel: torch.Tensor, num: int, generator: torch.Generator | None = None, num_relations: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots of the shared in-batch negatives: (batch positions [K], each slot's relation [K], -1 for an empty
    slot), up to ``num`` per relation present, drawn at random within each relation.

    K depends only on shapes, never on the data, so nothing waits for the device: ``num`` slots per relation
    (``num_relations``: how many there can be) when that is fewer than the batch, else every position in a
    random order, the ones past a relation's first ``num`` marked empty.  Empty slots carry relation -1,
    which no edge has, so a per-relation mask drops them with the other relations.
    """
    size = rel.shape[0]
    if num <= 0 or size == 0:
        empty = torch.zeros(0, dtype=torch.long, device=rel.device)
        return empty, empty
    if num >= size:
        return torch.arange(size, device=rel.device), rel
    perm = torch.randperm(size, generator=generator, device=rel.device)
    sorted_rel, order = torch.sort(rel[perm], stable=True)
    positions = perm[order]  # grouped by relation, random within each
    slots = num * (num_relations or size)
    if slots >= size:
        rank = torch.arange(size, device=rel.device) - torch.searchsorted(sorted_rel, sorted_rel)
        return positions, torch.where(rank < num, sorted_rel, -1)
    slot = torch.arange(slots, device=rel.device)
    want = slot // num  # the relation of slot s, and its place s % num among that relation's slots
    first = torch.searchsorted(sorted_rel, want)
    have = torch.searchsorted(sorted_rel, want, right=True) - first
    picked = positions[(first + slot % num).clamp_max(size - 1)]
    return picked, torch.where(slot % num < have, want, -1)


def sample_uniform(
    num: int, partition_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``num`` offsets drawn uniformly (with replacement, like PBG) from a partition of ``partition_size``, on
    ``device`` with ``generator`` (a generator of that device: no host draw, no copy)."""
    if num <= 0 or partition_size <= 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.randint(0, partition_size, (num,), generator=generator, device=device)


_CONSTANTS: dict[tuple[float, str], torch.Tensor] = {}


def _constant(value: float, device: torch.device) -> torch.Tensor:
    """``value`` as a cached 0-dim fp32 tensor on ``device``: an op with a Python number wraps and converts it on
    every call (``rsub(x, k)`` is 6 ATen ops, ``sub(k_tensor, x)`` one)."""
    key = (float(value), str(device))
    out = _CONSTANTS.get(key)
    if out is None:
        out = _CONSTANTS[key] = torch.full((), float(value), dtype=torch.float32, device=device)
    return out


def _valid(hit: torch.Tensor, width: int) -> torch.Tensor:
    """fp32 count of valid negatives per row, ``width - hits`` (a float sum of a bool tensor is several times
    faster than its integer count at WordNet's widths; ``width`` a cached tensor: 1 op, not rsub's 6)."""
    return torch.sub(_constant(width, hit.device), hit.sum(-1, dtype=torch.float32))


MASKED = -1e30  # added to a masked negative's score: exp() underflows to 0, softplus/relu give 0 exactly


def negative_bias(
    true_ids: torch.Tensor,
    true_rel: torch.Tensor,
    batch_ids: torch.Tensor,
    batch_rel: torch.Tensor | None,
    uniform_ids: torch.Tensor,
) -> torch.Tensor:
    """Additive bias [B, K + G] (in-batch columns first): 0 where negative k counts for positive i, else MASKED.

    In-batch columns count only for edges of the same relation (``batch_rel=None``: in_batch_scope batch,
    any relation counts); any sample equal to the true entity
    (the positive itself included) is masked, so the positive is never its own negative.  Built as a
    float tensor by comparisons written straight into it (bool masked_fill/where are several times slower on CPU),
    and applied by addition, whose backward is free.
    """
    size, k = true_ids.shape[0], batch_ids.shape[0]
    out = torch.empty((size, k + uniform_ids.shape[0]), dtype=torch.float32, device=true_ids.device)
    torch.eq(true_ids.unsqueeze(1), uniform_ids.unsqueeze(0), out=out[:, k:])
    if k:
        block = out[:, :k]
        if batch_rel is None:
            torch.eq(true_ids.unsqueeze(1), batch_ids.unsqueeze(0), out=block)
        else:
            torch.ne(true_rel.unsqueeze(1), batch_rel.unsqueeze(0), out=block)
            block.add_(true_ids.unsqueeze(1) == batch_ids.unsqueeze(0))
    return out.mul_(MASKED)


FP32_EXACT_IDS = 2**24  # every id below this is exact in fp32


def _compared(ids: torch.Tensor, exact_fp32: bool) -> torch.Tensor:
    """Ids as compared by the masks: fp32 where every id is exact in it (its comparisons into an fp32
    buffer are vectorized, several times faster on CPU than an int64 compare into bool), else as they are."""
    return ids.to(torch.float32) if exact_fp32 else ids


def _fits_fp32(id_bound: int | None) -> bool:
    """Whether ids below ``id_bound`` (None: unknown) compare exactly as fp32."""
    return id_bound is not None and id_bound <= FP32_EXACT_IDS


def _apply_mask(out: torch.Tensor, hit: torch.Tensor) -> None:
    """``out[hit] = MASKED`` for scores (|s| far below 1e22, so ``s + MASKED`` rounds to MASKED exactly), as an
    add of the 0/1 mask (fp32, or a bool mask's bytes): on CPU faster than ``masked_fill_`` over a strided
    score block."""
    out.add_(hit.view(torch.uint8) if hit.dtype == torch.bool else hit, alpha=MASKED)


def mask_negatives(
    neg: torch.Tensor,
    true_ids: torch.Tensor,
    true_rel: torch.Tensor,
    batch_ids: torch.Tensor,
    batch_rel: torch.Tensor | None,
    uniform_ids: torch.Tensor,
    count: bool = True,
    id_bound: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masked fp32 scores and the count of valid negatives per row (None unless ``count``: only some losses
    read it): :func:`negative_bias`'s semantics (tests check they agree), applied in place (an fp32 ``neg``
    is modified, so it may be a view of the logits).  Leading dims (the two sides of a step) broadcast:
    ``neg [..., B, K + G]``, ``true_ids [..., B]``, ``batch_ids [..., K]``, ``uniform_ids [..., G]``;
    ``true_rel [B]`` and ``batch_rel [K]`` are shared.  ``id_bound``: an upper bound of every id and relation
    (the tables' row counts, known without reading the ids): below 2**24 the ids are compared as fp32.

    One dense [B, K + G] equality mask: it costs a compare per score, against the D multiply-adds each score
    took, and its shape never depends on the data (a sparse search of the collisions needs their count on
    the host).
    """
    k = batch_ids.shape[-1]
    out = neg.float() if neg.dtype in (torch.bfloat16, torch.float16) else neg  # fp32 scores: masked in place
    exact = _fits_fp32(id_bound)
    hit = torch.empty(out.shape, dtype=torch.float32 if exact else torch.bool, device=out.device)
    cand = torch.empty(0, dtype=torch.float32 if exact else batch_ids.dtype, device=out.device)
    torch.cat([batch_ids, uniform_ids], -1, out=cand)  # (converted as it is copied)
    torch.eq(_compared(true_ids, exact).unsqueeze(-1), cand.unsqueeze(-2), out=hit)
    if k and batch_rel is not None:
        block = hit[..., :k]
        other = torch.ne(_compared(true_rel, exact).unsqueeze(1), _compared(batch_rel, exact).unsqueeze(0))
        torch.maximum(block, other, out=block)
    _apply_mask(out, hit)
    return out, (_valid(hit, neg.shape[-1]) if count else None)


def _grouped(true_ids: torch.Tensor, per: int, groups: int) -> torch.Tensor:
    """``true_ids [..., B]`` as ``[..., groups, per, 1]`` (row i in group ``i // per``), padded with -2 (no id)."""
    size = true_ids.shape[-1]
    padded = torch.nn.functional.pad(true_ids, (0, groups * per - size), value=-2) if groups * per > size else true_ids
    return padded.view(*true_ids.shape[:-1], groups, per, 1)


def mask_chunked(
    neg: torch.Tensor,
    true_ids: torch.Tensor,
    cand_ids: torch.Tensor,
    chunk: int,
    pad_columns: int,
    shared_ids: torch.Tensor | None = None,
    chunks_per_draw: int = 1,
    count: bool = True,
    id_bound: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mask PBG-style chunk scores ``neg`` [..., B, K + G] (row i belongs to chunk ``i // chunk``) in place.

    ``cand_ids`` [..., C, K] are the entity ids of each chunk's own negatives (its positives first, -1 where
    the last chunk is padded, then, in PBG's exact scheme, its own uniform samples); ``shared_ids``
    [..., draws, G] (or [G]) are uniform draws in the last G columns, draw ``d`` shared by chunks
    ``d * chunks_per_draw ...`` (one draw: by every chunk).  Any negative equal to the row's true entity
    (``true_ids [..., B]``) is masked — the positive itself (the chunk diagonal) included — and so are the
    padding columns (``pad_columns``: how many the last chunk has; they are the -1 ids).  One dense equality
    mask, as in :func:`mask_negatives` (``id_bound`` as there), its column blocks compared straight into one
    buffer (each block against its own chunk's or draw's ids), then one fill; the count of valid negatives
    per row only when ``count``.
    """
    out = neg.float() if neg.dtype in (torch.bfloat16, torch.float16) else neg
    lead, size = true_ids.shape[:-1], true_ids.shape[-1]
    n_chunks, k = cand_ids.shape[-2], cand_ids.shape[-1]
    draws = None
    if shared_ids is not None and shared_ids.numel():
        draws = shared_ids if shared_ids.dim() > 1 else shared_ids.unsqueeze(0)
    per_draw = chunk * (chunks_per_draw if draws is not None and draws.shape[-2] > 1 else n_chunks)
    rows = max(n_chunks * chunk, 0 if draws is None else draws.shape[-2] * per_draw)
    width = k + (0 if draws is None else draws.shape[-1])
    exact = _fits_fp32(id_bound)
    hit = torch.empty((*lead, rows, width), dtype=torch.float32 if exact else torch.bool, device=neg.device)
    own = hit[..., : n_chunks * chunk, :k].view(*lead, n_chunks, chunk, k)
    true_c, cand_c = _compared(true_ids, exact), _compared(cand_ids, exact)
    torch.eq(_grouped(true_c, chunk, n_chunks), cand_c.unsqueeze(-2), out=own)
    if pad_columns:  # the last chunk's padding columns (its -1 ids)
        last = own[..., -1, :, :]
        torch.maximum(last, (cand_c[..., -1, :] < 0).unsqueeze(-2), out=last)
    if draws is not None:
        block = hit[..., :, k:].view(*lead, draws.shape[-2], per_draw, -1)
        torch.eq(_grouped(true_c, per_draw, draws.shape[-2]), _compared(draws, exact).unsqueeze(-2), out=block)
    hit = hit[..., :size, :] if rows > size else hit
    _apply_mask(out, hit)
    return out, (_valid(hit, width) if count else None)

"""Negative sampling without per-edge Python: in-batch (per relation) and uniform (per partition).

In-batch negatives for a batch are a set of batch *positions*: per relation present, up to ``S`` of that
relation's edges chosen at random, shared by all its edges (TwHIN/PBG batch negatives; they follow the
degree distribution).  With ``S`` at least the relation's count, all of its batch edges are used, like a
PBG chunk spanning the batch.  Uniform negatives are ``G`` offsets drawn uniformly from the resident
partition, shared by the whole batch.
"""

from __future__ import annotations

import torch


def select_in_batch(rel: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Positions (into the batch) of the shared in-batch negatives: up to ``num`` per relation present."""
    size = rel.shape[0]
    if num <= 0 or size == 0:
        return torch.zeros(0, dtype=torch.long, device=rel.device)
    if num >= size:
        return torch.arange(size, device=rel.device)
    perm = torch.randperm(size, generator=generator, device="cpu").to(rel.device)
    shuffled = rel[perm]
    sorted_rel, order = torch.sort(shuffled, stable=True)
    start = torch.searchsorted(sorted_rel, sorted_rel)  # first index of each relation's run
    rank = torch.arange(size, device=rel.device) - start
    return perm[order[rank < num]]


def sample_uniform(
    num: int, partition_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``num`` offsets drawn uniformly (with replacement, like PBG) from a partition of ``partition_size``."""
    if num <= 0 or partition_size <= 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.randint(0, partition_size, (num,), generator=generator).to(device)


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


def matches(true_ids: torch.Tensor, cand_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All (row i, column k) with ``true_ids[i] == cand_ids[k]``, by sort + searchsorted (no [B, C] compare).

    Collisions are rare (the positive itself, repeated entities, uniform hits), so this is O((B + C) log n)
    with n the smaller side, which is the one sorted (PBG's per-chunk samples make C ~20x B).
    """
    if cand_ids.shape[0] > true_ids.shape[0]:
        cols, rows = _matches_sorted(cand_ids, true_ids)
        return rows, cols
    return _matches_sorted(true_ids, cand_ids)


def _matches_sorted(probe: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(i, k) with ``probe[i] == keys[k]``; ``keys`` is the side that gets sorted.

    One binary search per probe finds the hits; only the (rare) hits are searched again for the end of
    their run of equal keys.
    """
    if keys.numel() == 0 or probe.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=probe.device)
        return empty, empty
    sorted_k, order = torch.sort(keys)
    lo = torch.searchsorted(sorted_k, probe)
    hit = torch.nonzero(sorted_k[lo.clamp_max(keys.shape[0] - 1)] == probe).squeeze(1)
    lo = lo[hit]
    counts = torch.searchsorted(sorted_k, probe[hit], right=True) - lo
    rows = torch.repeat_interleave(hit, counts)
    starts = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
    cols = order[starts + torch.arange(rows.shape[0], device=probe.device)]
    return rows, cols


def mask_negatives(
    neg: torch.Tensor,
    true_ids: torch.Tensor,
    true_rel: torch.Tensor,
    batch_ids: torch.Tensor,
    batch_rel: torch.Tensor | None,
    uniform_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked fp32 scores and the count of valid negatives per row: the fast path of :func:`negative_bias`.

    Same semantics (tests check they agree): collisions with the true entity are found sparsely and set to
    MASKED in place (an fp32 ``neg`` is modified, so it may be a view of a larger logits buffer); only
    relation scope needs a dense [B, K] comparison for its in-batch block.
    """
    size, k = neg.shape[0], batch_ids.shape[0]
    out = neg.float() if neg.dtype in (torch.bfloat16, torch.float16) else neg  # fp32 scores: masked in place
    valid = torch.full((size,), neg.shape[1], dtype=out.dtype, device=neg.device)
    if k and batch_rel is not None:
        other = true_rel.unsqueeze(1) != batch_rel.unsqueeze(0)
        valid -= other.sum(1)
        out[:, :k].add_(other.to(out.dtype).mul_(MASKED))  # in place: ``neg`` may be a view of the logits
        keep_same = True
    else:
        keep_same = False
    rows, cols = matches(true_ids, torch.cat([batch_ids, uniform_ids]))
    if keep_same and rows.numel():  # in-batch collisions of another relation are masked already
        same = (cols >= k) | (true_rel[rows] == batch_rel[cols.clamp_max(max(k - 1, 0))])
        rows, cols = rows[same], cols[same]
    if rows.numel():
        out.index_put_((rows, cols), torch.tensor(MASKED, dtype=out.dtype, device=out.device))
        valid -= torch.bincount(rows, minlength=size).to(valid.dtype)
    return out, valid


def mask_chunked(
    neg: torch.Tensor,
    true_ids: torch.Tensor,
    cand_ids: torch.Tensor,
    chunk: int,
    pad_columns: int,
    shared_ids: torch.Tensor | None = None,
    chunks_per_draw: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask PBG-style chunk scores ``neg`` [B, K + G] (row i belongs to chunk ``i // chunk``).

    ``cand_ids`` [C, K] are the entity ids of each chunk's own negatives (its positives first, then, in
    PBG's exact scheme, its own uniform samples); ``shared_ids`` [draws, G] (or [G]) are uniform draws in the
    last G columns, draw ``d`` shared by chunks ``d * chunks_per_draw ...`` (a [G] draw: by every chunk).
    Any negative equal to the row's true entity is masked — the positive itself (the chunk diagonal)
    included — found sparsely by offsetting ids per chunk (per draw) so one search covers every chunk.
    The last ``pad_columns`` in-batch columns of the last chunk are padding and always masked.
    """
    size, width = neg.shape
    out = neg.float() if neg.dtype in (torch.bfloat16, torch.float16) else neg
    device, n_chunks, k = neg.device, cand_ids.shape[0], cand_ids.shape[1]
    # key = (group << 32) | (id + 1): chunk groups 0..C-1, draw groups C.., so ONE search covers both blocks
    row_chunk = torch.arange(size, device=device) // chunk
    probes = [(row_chunk << 32) + true_ids + 1]
    keys = [((torch.arange(n_chunks, device=device) << 32).unsqueeze(1) + cand_ids + 1).flatten()]
    g = 0  # width of one shared draw
    if shared_ids is not None and shared_ids.numel():
        draws = shared_ids.view(-1, shared_ids.shape[-1])
        g = draws.shape[1]
        row_draw = (row_chunk // chunks_per_draw).clamp_max(draws.shape[0] - 1) + n_chunks
        probes.append((row_draw << 32) + true_ids + 1)
        keys.append(
            (((torch.arange(draws.shape[0], device=device) + n_chunks) << 32).unsqueeze(1) + draws + 1).flatten()
        )
    probe_rows, flat = matches(torch.cat(probes), torch.cat(keys))
    rows = probe_rows % size
    own = flat < n_chunks * k
    # a candidate's column: its place in its chunk's row of cand_ids, or k + its place in its draw
    cols = torch.where(own, flat % k, k + (flat - n_chunks * k) % max(1, g))
    valid = torch.full((size,), width, dtype=out.dtype, device=neg.device)
    if rows.numel():
        out.index_put_((rows, cols), torch.tensor(MASKED, dtype=out.dtype, device=out.device))
        valid -= torch.bincount(rows, minlength=size).to(valid.dtype)
    if pad_columns:
        first = (size - 1) // chunk * chunk
        out[first:, chunk - pad_columns : chunk] = MASKED
        valid[first:] -= pad_columns
    return out, valid

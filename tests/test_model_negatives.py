"""Negative sampling and masking: per-relation in-batch sets, uniform draws, the positive never counts."""

from __future__ import annotations

import torch

from tbg.model.negatives import MASKED, negative_bias, sample_uniform, select_in_batch


def test_select_in_batch_per_relation() -> None:
    rel = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    gen = torch.Generator().manual_seed(0)
    for num_relations in (3, None):  # 4 slots per relation, or every position with the extra ones empty
        sel, sel_rel = select_in_batch(rel, 4, gen, num_relations)
        live = sel[sel_rel >= 0]
        assert torch.equal(sel_rel[sel_rel >= 0], rel[live])  # a live slot carries its edge's relation
        assert torch.bincount(rel[live], minlength=3).tolist() == [4, 3, 4]  # up to S per relation
        assert len(set(live.tolist())) == len(live)  # without replacement
    assert sel.shape[0] == 20 and select_in_batch(rel, 4, gen, 3)[0].shape[0] == 12  # sizes from shapes only
    assert select_in_batch(rel, 100, gen)[0].tolist() == list(range(20))  # S >= batch: every positive
    assert select_in_batch(rel, 0, gen)[0].numel() == 0


def test_mask_excludes_positive_other_relations_and_collisions() -> None:
    true_ids = torch.tensor([7, 8, 9])
    rel = torch.tensor([0, 0, 1])
    sel = torch.tensor([0, 1, 2])
    uniform = torch.tensor([8, 1])
    bias = negative_bias(true_ids, rel, true_ids[sel], rel[sel], uniform)
    assert set(bias.unique().tolist()) <= set(torch.tensor([0.0, MASKED, 2 * MASKED]).tolist())
    assert (bias < 0).tolist() == [
        [True, False, True, False, False],  # own positive masked; edge 2 is another relation
        [False, True, True, True, False],  # uniform 8 equals the true entity
        [True, True, True, False, False],
    ]


def test_uniform_range_and_seed() -> None:
    a = sample_uniform(1000, 17, torch.Generator().manual_seed(1))
    b = sample_uniform(1000, 17, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and int(a.min()) == 0 and int(a.max()) == 16


def test_batch_scope_mask_keeps_other_relations() -> None:
    true_ids = torch.tensor([7, 8, 9])
    bias = negative_bias(true_ids, torch.tensor([0, 0, 1]), true_ids, None, torch.tensor([9]))
    assert (bias < 0).tolist() == [[True, False, False, False], [False, True, False, False], [False, False, True, True]]


def test_fast_mask_agrees_with_dense_bias() -> None:
    """mask_negatives (in place, with counts) == negative_bias for both in-batch scopes and empty slots."""
    from tbg.model.negatives import mask_negatives

    gen = torch.Generator().manual_seed(0)
    true_ids = torch.randint(0, 30, (200,), generator=gen)
    rel = torch.randint(0, 3, (200,), generator=gen)
    sel, sel_rel = select_in_batch(rel, 20, gen, 3)
    uniform = torch.randint(0, 30, (50,), generator=gen)
    neg = torch.randn(200, len(sel) + 50, generator=gen).bfloat16()
    for batch_rel in (sel_rel, None):
        bias = negative_bias(true_ids, rel, true_ids[sel], batch_rel, uniform)
        for id_bound in (None, 30, 2**25):  # int64 compares, fp32 ones (ids below 2**24), int64 again
            got, count = mask_negatives(neg, true_ids, rel, true_ids[sel], batch_rel, uniform, id_bound=id_bound)
            assert torch.equal(got < -1e29, bias < 0)
            assert torch.equal(got[bias == 0], neg.float()[bias == 0])
            assert torch.equal(count, (bias == 0).sum(1).float())


def test_chunk_mask_masks_exactly_the_true_entity_and_the_padding() -> None:
    """mask_chunked: row i of chunk c masks its own chunk's candidates equal to its true id, the last chunk's
    padding (-1) and its draw's uniform samples equal to its true id; the same with fp32 and int64 compares."""
    from tbg.model.negatives import mask_chunked

    gen = torch.Generator().manual_seed(1)
    size, chunk, per_draw = 23, 5, 2  # 5 chunks, the last one 2 short; 3 draws of 4 uniform samples
    true_ids = torch.randint(0, 9, (2, size), generator=gen)
    n_chunks, pad = -(-size // chunk), -size % chunk
    own = torch.nn.functional.pad(true_ids, (0, pad), value=-1).view(2, n_chunks, chunk)
    draws = torch.randint(0, 9, (2, -(-n_chunks // per_draw), 4), generator=gen)
    expected = torch.zeros(2, size, chunk + 4, dtype=torch.bool)
    for s in range(2):
        for i in range(size):
            c = i // chunk
            cand = torch.cat([own[s, c], draws[s, c // per_draw]])
            expected[s, i] = (cand == true_ids[s, i]) | (cand < 0)
    for id_bound in (None, 9):
        neg = torch.randn(2, size, chunk + 4, generator=torch.Generator().manual_seed(2))
        got, count = mask_chunked(neg.clone(), true_ids, own, chunk, pad, draws, per_draw, id_bound=id_bound)
        assert torch.equal(got < -1e29, expected)
        assert torch.equal(got[~expected], neg[~expected])
        assert torch.equal(count, (~expected).sum(-1).float())

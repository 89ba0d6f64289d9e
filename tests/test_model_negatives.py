"""Negative sampling and masking: per-relation in-batch sets, uniform draws, the positive never counts."""

from __future__ import annotations

import torch

from tbg.model.negatives import MASKED, negative_bias, sample_uniform, select_in_batch


def test_select_in_batch_per_relation() -> None:
    rel = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    gen = torch.Generator().manual_seed(0)
    sel = select_in_batch(rel, 4, gen)
    counts = torch.bincount(rel[sel], minlength=3).tolist()
    assert counts == [4, 3, 4]  # up to S per relation, all of a smaller relation
    assert len(set(sel.tolist())) == len(sel)  # without replacement
    assert select_in_batch(rel, 100, gen).tolist() == list(range(20))  # S >= batch: every positive
    assert select_in_batch(rel, 0, gen).numel() == 0


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

"""The shared score function: operator formulas, comparator formulas, and positive/candidate agreement."""

from __future__ import annotations

import pytest
import torch

from tbg.model.comparators import build_comparator
from tbg.model.scoring import RelationModel, SideOperators

KINDS = ["none", "translation", "diagonal", "linear", "affine", "complex_diagonal"]


def _randomised(kinds: list[str], dim: int = 4, seed: int = 0) -> SideOperators:
    torch.manual_seed(seed)
    ops = SideOperators(kinds, [dim] * len(kinds))
    for p in ops.parameters():
        torch.nn.init.normal_(p)
    return ops


def test_operator_formulas_by_hand() -> None:
    ops = _randomised(KINDS)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    p = dict(ops.named_parameters())
    expected = {
        0: x,
        1: x + p["translation"][1],
        2: x * p["diagonal"][2],
        3: x @ p["linear"][3].T,
        4: x @ p["linear"][4].T + p["translation"][4],
    }
    for rel, want in expected.items():
        got = ops(x, torch.tensor([rel]))
        assert torch.allclose(got, want, atol=1e-6), KINDS[rel]
        assert torch.allclose(ops.apply_one(x, rel), want, atol=1e-6)
    # complex_diagonal: (a + bi)(r + si) with real parts in the first half of the vector
    re, im = p["real"][5], p["imag"][5]
    a, b = x[0, :2], x[0, 2:]
    want = torch.cat([a * re - b * im, a * im + b * re])
    assert torch.allclose(ops(x, torch.tensor([5]))[0], want, atol=1e-6)


def test_identity_initialisation() -> None:
    ops = SideOperators(KINDS, [6] * len(KINDS))
    x = torch.randn(len(KINDS), 6)
    assert torch.allclose(ops(x, torch.arange(len(KINDS))), x)


def test_mixed_dims_use_each_relations_own_width() -> None:
    ops = SideOperators(["translation", "translation"], [2, 4])
    with torch.no_grad():
        ops.translation.copy_(torch.arange(8.0).view(2, 4))
    assert ops(torch.zeros(1, 2), torch.tensor([0])).tolist() == [[0.0, 1.0]]
    assert ops.export(1)["translation"].tolist() == [4.0, 5.0, 6.0, 7.0]


@pytest.mark.parametrize("name", ["dot", "cos", "l2", "squared_l2"])
def test_comparator_formulas(name: str) -> None:
    torch.manual_seed(1)
    a, b = torch.randn(3, 5), torch.randn(4, 5)
    comp = build_comparator(name)
    pa, pb = comp.prepare(a), comp.prepare(b)
    brute = {
        "dot": a @ b.T,
        "cos": torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1),
        "l2": -torch.cdist(a, b),
        "squared_l2": -(torch.cdist(a, b) ** 2),
    }[name]
    assert torch.allclose(comp.matrix(pa, pb), brute, atol=1e-4)
    assert torch.allclose(comp.pairwise(pa, pb[:3]), torch.diagonal(brute[:, :3]), atol=1e-4)


@pytest.mark.parametrize("sides", ["both", "rhs"])
@pytest.mark.parametrize("comparator", ["dot", "cos", "l2", "squared_l2"])
def test_positive_score_equals_candidate_score(sides: str, comparator: str) -> None:
    """Positives and negatives go through one function: a true edge scores the same either way."""
    torch.manual_seed(2)
    model = RelationModel(KINDS, [4] * len(KINDS), comparator, sides)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    lhs, rhs = torch.randn(5, 4), torch.randn(5, 4)
    for rel in range(len(KINDS)):
        rel_t = torch.full((5,), rel)
        for target, known, cand in (("rhs", lhs, rhs), ("lhs", rhs, lhs)):
            pos = model.score_positive(target, lhs, rhs, rel_t)
            full = model.score_candidates(target, known, rel, cand)
            assert torch.allclose(torch.diagonal(full), pos, atol=1e-4)


def test_both_mode_makes_rhs_ranking_relation_aware_with_dot() -> None:
    """PBG standard mode with dot+translation: θx·(θy + r) ranks rhs candidates the same for every r."""
    torch.manual_seed(3)
    x, cands = torch.randn(1, 4), torch.randn(10, 4)
    for sides, should_differ in (("rhs", False), ("both", True)):
        model = RelationModel(["translation", "translation"], [4, 4], "dot", sides)
        for p in model.parameters():
            torch.nn.init.normal_(p)
        order0 = model.score_candidates("rhs", x, 0, cands).argsort()
        order1 = model.score_candidates("rhs", x, 1, cands).argsort()
        assert (not torch.equal(order0, order1)) == should_differ

"""Loss and gradient values of the training path against hand-written per-edge formulas.

For every operator × comparator × loss × relation_sides, the batched training path
(RelationModel.score_batch + negative mask + edge_losses, summed) must equal a plain Python loop over
edges and negatives written straight from the formulas in docs/training.md — values and gradients.
"""

from __future__ import annotations

import math

import pytest
import torch

from tbg.model.losses import edge_losses, masked_losses
from tbg.model.negatives import mask_negatives
from tbg.model.scoring import RelationModel

KINDS = ["none", "translation", "diagonal", "linear", "affine", "complex_diagonal"]
COMPARATORS = ["dot", "cos", "l2", "squared_l2"]
LOSSES = ["logistic", "ranking", "softmax"]
MARGIN = 0.3


def _op(kind: str, params: dict[str, torch.Tensor], x: torch.Tensor, r: int) -> torch.Tensor:
    if kind == "none":
        return x
    if kind == "translation":
        return x + params["translation"][r]
    if kind == "diagonal":
        return x * params["diagonal"][r]
    if kind == "linear":
        return params["linear"][r] @ x
    if kind == "affine":
        return params["linear"][r] @ x + params["translation"][r]
    half = x.shape[0] // 2
    a, b, re, im = x[:half], x[half:], params["real"][r], params["imag"][r]
    return torch.cat([a * re - b * im, a * im + b * re])


def _cmp(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if name == "dot":
        return (a * b).sum()
    if name == "cos":
        return (a * b).sum() / (a.norm() * b.norm())
    if name == "squared_l2":
        return -((a - b) ** 2).sum()
    return -(((a - b) ** 2).sum()).clamp_min(1e-30).sqrt()  # clamped like PBG, finite gradient at 0


def _hand_loss(kind: str, s: torch.Tensor, negs: list[torch.Tensor]) -> torch.Tensor:
    if kind == "logistic":
        sp = lambda z: torch.log1p(torch.exp(z))  # noqa: E731
        return sp(-s) + sum(sp(t) for t in negs) / max(1, len(negs))
    if kind == "ranking":
        return sum(torch.clamp(MARGIN - s + t, min=0) for t in negs) + 0 * s
    return -s + torch.log(torch.exp(s) + sum(torch.exp(t) for t in negs))


def _setup(kind: str, comparator: str, sides: str, seed: int = 0):
    torch.manual_seed(seed)
    model = RelationModel([kind, kind], [4, 4], comparator, sides).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, mean=0.5, std=0.5)
    ids_l = torch.tensor([0, 1, 2, 1])
    ids_r = torch.tensor([3, 4, 3, 5])
    rel = torch.tensor([0, 1, 0, 0])
    table = torch.randn(6, 4, dtype=torch.float64)
    uni = torch.tensor([5, 3])  # uniform samples; 3 collides with true rhs of edges 0 and 2
    return model, table, ids_l, ids_r, rel, uni


def _score(model: RelationModel, comparator: str, target: str, x: torch.Tensor, y: torch.Tensor, r: int):
    """Hand-computed score of (x, r, y) predicting ``target`` (docs/training.md table)."""
    kind = model.rhs_operators.kinds[r]
    rp = dict(model.rhs_operators.named_parameters())
    if model.sides == "both":
        lp = dict(model.lhs_operators.named_parameters())
        if target == "rhs":
            return _cmp(comparator, _op(kind, lp, x, r), y)
        return _cmp(comparator, x, _op(kind, rp, y, r))
    return _cmp(comparator, x, _op(kind, rp, y, r))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("comparator", COMPARATORS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sides", ["both", "rhs"])
@pytest.mark.parametrize("scope", ["relation", "batch"])
def test_batched_loss_matches_hand_formula(kind: str, comparator: str, loss: str, sides: str, scope: str) -> None:
    model, table, ids_l, ids_r, rel, uni = _setup(kind, comparator, sides)
    sel = torch.tensor([0, 1, 3])  # in-batch negatives: positions of edges 0, 1, 3
    # batched path
    emb = table.clone().requires_grad_()
    x, y = emb[ids_l], emb[ids_r]
    total = 0
    for target, known, true, ids_true in (("rhs", x, y, ids_r), ("lhs", y, x, ids_l)):
        negs = torch.cat([true[sel], emb[uni]])
        pos, neg = model.score_batch(target, known, true, rel, negs)
        batch_rel = rel[sel] if scope == "relation" else None
        neg, count = mask_negatives(neg, ids_true, rel, ids_true[sel], batch_rel, uni)  # the training path
        total = total + masked_losses(loss, pos, neg, count, MARGIN).sum()
    total.backward()
    got_value, got_grad = total.detach(), emb.grad.clone()
    rel_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # hand loop: negatives of edge i = in-batch entities of the same relation + uniform, minus the true one
    emb2 = table.clone().requires_grad_()
    want = 0
    for i in range(len(rel)):
        r = int(rel[i])
        for target in ("rhs", "lhs"):
            true_ids = ids_r if target == "rhs" else ids_l
            same = [j for j in sel.tolist() if scope == "batch" or int(rel[j]) == r]
            cands = [int(true_ids[j]) for j in same] + uni.tolist()
            cands = [c for c in cands if c != int(true_ids[i])]
            if target == "rhs":
                s = _score(model, comparator, "rhs", emb2[ids_l[i]], emb2[ids_r[i]], r)
                negs = [_score(model, comparator, "rhs", emb2[ids_l[i]], emb2[c], r) for c in cands]
            else:
                s = _score(model, comparator, "lhs", emb2[ids_l[i]], emb2[ids_r[i]], r)
                negs = [_score(model, comparator, "lhs", emb2[c], emb2[ids_r[i]], r) for c in cands]
            want = want + _hand_loss(loss, s, negs)
    want.backward()
    assert math.isclose(float(got_value), float(want.detach()), rel_tol=1e-6, abs_tol=1e-9)
    assert torch.allclose(got_grad, emb2.grad, rtol=1e-5, atol=1e-5)
    for got, p in zip(rel_grads, model.parameters()):
        assert torch.allclose(got, p.grad, rtol=1e-5, atol=1e-5)


def test_loss_values_on_numbers() -> None:
    """Concrete numbers: s=1, negatives [0, 2 (masked)] (dense-mask entry point)."""
    pos = torch.tensor([1.0])
    neg = torch.tensor([[0.0, 2.0]])
    masked = torch.tensor([[False, True]])
    sp = lambda z: math.log1p(math.exp(z))  # noqa: E731
    assert math.isclose(float(edge_losses("logistic", pos, neg, masked)), sp(-1) + sp(0), rel_tol=1e-6)
    assert math.isclose(float(edge_losses("ranking", pos, neg, masked, margin=1.5)), 0.5, rel_tol=1e-6)
    assert math.isclose(float(edge_losses("softmax", pos, neg, masked)), -1 + math.log(math.e + 1), rel_tol=1e-6)


def test_softmax_loss_matches_cross_entropy_with_masks_and_far_positives() -> None:
    """The one-exp softmax loss equals cross-entropy (target 0) in value and gradient, including masked
    entries and positives scored 200 below the best negative (where log p_0 would underflow)."""
    from tbg.model.losses import softmax_loss
    from tbg.model.negatives import MASKED

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 301, generator=gen) * 4
    logits[:, 7::11] = MASKED
    logits[:4, 0] = -200.0
    logits[4, 1:] = MASKED  # only the positive left: loss 0
    weights = torch.rand(64, generator=gen)
    mine = logits.clone().requires_grad_()
    ref = logits.clone().requires_grad_()
    got = softmax_loss(mine)
    want = torch.nn.functional.cross_entropy(ref, torch.zeros(64, dtype=torch.long), reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float(got[4].detach()) == 0.0 and float(got[0].detach()) > 190
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-5, atol=1e-6)
    assert (mine.grad[:, 7::11] == 0).all()
    with torch.no_grad():  # validation's path
        torch.testing.assert_close(softmax_loss(logits), want.detach(), rtol=1e-5, atol=1e-5)

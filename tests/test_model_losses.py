"""Loss and gradient values of the production training path against hand-written per-edge formulas.

For every operator × comparator × loss × relation_sides × in-batch scope, ``BatchScorer`` (the trainer's
step: gathers, shared-negative products, masks, loss, backward) must equal a plain loop over edges and their
negatives written straight from the formulas in docs/training.md: the loss value, the gradient of every
embedding row it touched, and the gradient of every relation parameter.  The reference sees the same rows
and the same negatives: every in-batch candidate (``in_batch_negatives`` covers the batch) and the uniform
samples drawn from an equally seeded generator (lhs side first, then rhs, as the step draws them).
"""

from __future__ import annotations

import math

import pytest
import torch
from builders import make_config

from tbg.model.losses import LOSSES
from tbg.model.negatives import MASKED
from tbg.model.scoring import RelationModel
from tbg.train.batch_scorer import Batch, BatchScorer, coalesced_grads

KINDS = ["none", "translation", "diagonal", "linear", "affine", "complex_diagonal"]
COMPARATORS = ["dot", "cos", "l2", "squared_l2"]
LOSS_NAMES = ["logistic", "ranking", "softmax"]
MARGIN = 0.3
USERS, ITEMS, DIM, UNIFORM, SEED = 5, 6, 4, 3, 11
# chunk scope scores mixed relations in one product: it needs relation-free candidates (config rule)
CASES = [
    (scope, sides, kind)
    for scope in ("relation", "batch", "chunk")
    for sides in ("both", "rhs")
    for kind in KINDS
    if scope != "chunk" or sides == "both" or kind == "none"
]


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


def _score(kind: str, comparator: str, sides: str, params, target: str, x, y, r: int) -> torch.Tensor:
    """Score of (x, r, y) predicting ``target`` (the docs/training.md table)."""
    if sides == "both" and target == "rhs":
        return _cmp(comparator, _op(kind, params["lhs"], x, r), y)
    return _cmp(comparator, x, _op(kind, params["rhs"], y, r))


def _config(kind: str, comparator: str, loss: str, sides: str, scope: str):
    chunked = {"global_negatives_scope": "chunk"} if scope == "chunk" else {}
    return make_config(
        "unused",  # never read: batches are scored in memory
        types={"user": (USERS, DIM, 1), "item": (ITEMS, DIM, 1)},
        optimizer={"sgd": {"lr": 0.1}},
        overrides={
            "model.relations": [{"name": "r0", "lhs": "user", "rhs": "item", "operator": kind},
                                {"name": "r1", "lhs": "user", "rhs": "item", "operator": kind, "weight": 2.0}],
            "model.comparator": comparator, "model.loss": loss, "model.margin": MARGIN,
            "model.relation_sides": sides,
            "train_data": {"data_root": "unused", "in_batch_scope": scope, "global_negatives": UNIFORM,
                           "in_batch_negatives": 2 if scope == "chunk" else 8, **chunked},
        },
    )  # fmt: skip


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("comparator", COMPARATORS)
@pytest.mark.parametrize(("scope", "sides", "kind"), CASES)
def test_batch_scorer_matches_hand_formulas(scope: str, sides: str, kind: str, comparator: str, loss: str) -> None:
    cfg = _config(kind, comparator, loss, sides, scope)
    torch.manual_seed(0)
    model = RelationModel.from_config(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, mean=0.5, std=0.5)
    tables = {"user": torch.randn(USERS, DIM), "item": torch.randn(ITEMS, DIM)}
    batch = Batch(
        lhs=torch.tensor([0, 1, 2, 1]),
        rhs=torch.tensor([3, 4, 3, 5]),  # edges 0 and 2 share rhs 3: each masks the other's in-batch copy
        rel=torch.tensor([0, 1, 0, 0]),
        weight=torch.tensor([1.0, 0.5, 2.0, 1.5]),
    )
    scorer = BatchScorer(cfg, model, torch.device("cpu"), bf16=False)
    result = scorer.score(batch, lambda etype, _side: ((etype, 0), tables[etype]), cfg.train_data,
                          torch.Generator().manual_seed(SEED))  # fmt: skip
    got_rows = coalesced_grads(result.gathered)
    got_rel = {name: p.grad.clone() for name, p in model.named_parameters()}

    # the reference: the same parameters and rows as plain leaves, one term per edge, target and negative
    gen = torch.Generator().manual_seed(SEED)
    draws = 2 if scope == "chunk" else 1  # chunk scope (PBG): one draw of UNIFORM samples per chunk of 2 edges
    uniform = {side: torch.randint(0, n, (draws * UNIFORM,), generator=gen).view(draws, UNIFORM).tolist()
               for side, n in (("lhs", USERS), ("rhs", ITEMS))}  # fmt: skip
    emb = {t: v.clone().requires_grad_() for t, v in tables.items()}
    params = {
        side: {name: p.detach().clone().requires_grad_() for name, p in ops.named_parameters()}
        for side, ops in (("lhs", model.lhs_operators), ("rhs", model.rhs_operators))
        if ops is not None
    }
    weights = [r.weight for r in cfg.model.relations]
    want = torch.zeros(())
    for i in range(len(batch)):
        r, x, y = int(batch.rel[i]), emb["user"][batch.lhs[i]], emb["item"][batch.rhs[i]]
        for target, true_ids in (("rhs", batch.rhs.tolist()), ("lhs", batch.lhs.tolist())):
            if scope == "chunk":
                peers = [j for j in range(len(batch)) if j // 2 == i // 2]
            else:
                peers = [j for j in range(len(batch)) if scope == "batch" or int(batch.rel[j]) == r]
            cands = [true_ids[j] for j in peers] + uniform[target][i // 2 if scope == "chunk" else 0]
            cands = [c for c in cands if c != true_ids[i]]  # never the true entity (the positive included)
            s = _score(kind, comparator, sides, params, target, x, y, r)
            if target == "rhs":
                negs = [_score(kind, comparator, sides, params, target, x, emb["item"][c], r) for c in cands]
            else:
                negs = [_score(kind, comparator, sides, params, target, emb["user"][c], y, r) for c in cands]
            want = want + weights[r] * float(batch.weight[i]) * _hand_loss(loss, s, negs)
    want.backward()

    assert math.isclose(float(result.loss), float(want.detach()), rel_tol=1e-5, abs_tol=1e-6)
    for etype, ref in emb.items():
        rows, grad, live = got_rows[(etype, 0)]
        rows, grad = rows[live], grad[live]
        torch.testing.assert_close(grad, ref.grad[rows], rtol=1e-4, atol=1e-5)
        untouched = torch.ones(ref.shape[0], dtype=torch.bool)
        untouched[rows] = False
        assert (ref.grad[untouched] == 0).all(), etype
    for name, grad in got_rel.items():
        side, param = name.split("_operators.")
        torch.testing.assert_close(grad, params[side][param].grad, rtol=1e-4, atol=1e-5)


def test_loss_values_on_numbers() -> None:
    """Concrete numbers: s=1, negatives [0, 2 (masked)]."""
    logits = torch.tensor([[1.0, 0.0, 2.0 + MASKED]])
    count = torch.tensor([1.0])
    sp = lambda z: math.log1p(math.exp(z))  # noqa: E731
    assert math.isclose(float(LOSSES.resolve("logistic")()(logits, count)), sp(-1) + sp(0), rel_tol=1e-6)
    assert math.isclose(float(LOSSES.resolve("ranking")(margin=1.5)(logits, count)), 0.5, rel_tol=1e-6)
    softmax = float(LOSSES.resolve("softmax")()(logits, count))
    assert math.isclose(softmax, -1 + math.log(math.e + 1), rel_tol=1e-6)


def test_softmax_loss_matches_cross_entropy_with_masks_and_far_positives() -> None:
    """The one-exp softmax loss equals cross-entropy (target 0) in value and gradient, including masked
    entries and positives scored 200 below the best negative (where log p_0 would underflow)."""
    from tbg.model.softmax import softmax_loss

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

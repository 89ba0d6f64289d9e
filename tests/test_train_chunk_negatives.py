"""PBG-style chunk negatives (train_data.in_batch_scope: chunk) against a per-edge brute force, with the
uniform samples drawn per chunk (global_negatives_scope: chunk, PBG exactly) or shared by the batch."""

from __future__ import annotations

import pytest
import torch
import yaml
from builders import REPO

from tbg.config import ConfigError, parse_config
from tbg.model.scoring import RelationModel
from tbg.train.batch_scorer import Batch, BatchScorer

NU, NT, B = 30, 25, 23


def _setup(loss: str, comparator: str):
    data = yaml.safe_load((REPO / "configs" / "twhin_seed.yaml").read_text())
    data["model"].update(loss=loss, comparator=comparator)
    cfg = parse_config(data)
    torch.manual_seed(0)
    model = RelationModel.from_config(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    tables = {"user": torch.randn(NU, 4), "tweet": torch.randn(NT, 4)}
    batch = Batch(torch.randint(0, NU, (B,)), torch.randint(0, NT, (B,)), torch.randint(0, 4, (B,)))
    return cfg, model, tables, batch


def _draws(in_batch: int, uniform: int, per_draw: int | None) -> dict[str, torch.Tensor]:
    """Each chunk's uniform samples [C * uniform] per side: draw d serves chunks d*per_draw.. (None: all)."""
    gen = torch.Generator().manual_seed(1)
    chunk = min(in_batch, B) if in_batch else B
    n_chunks = -(-B // chunk)
    per = n_chunks if per_draw is None or not in_batch else min(per_draw, n_chunks)
    draws = -(-n_chunks // per)
    uni = {
        "lhs": torch.randint(0, NU, (draws, uniform), generator=gen),
        "rhs": torch.randint(0, NT, (draws, uniform), generator=gen),
    }
    which = torch.arange(n_chunks) // per
    return {side: ids[which].flatten() for side, ids in uni.items()}


def _brute_force(model, tables, batch, loss, in_batch, uniform, margin, per_draw: int | None = 1) -> float:
    """Each edge against its chunk's other positives and its chunk's uniform samples, one by one."""
    chunk = min(in_batch, B) if in_batch else B
    uni = _draws(in_batch, uniform, per_draw)
    total = 0.0
    for i in range(B):
        c, rel = i // chunk, int(batch.rel[i])
        lo, hi = c * chunk, min(B, c * chunk + chunk)
        for target, known_table, known_id, table in (
            ("rhs", tables["user"], batch.lhs[i], tables["tweet"]),
            ("lhs", tables["tweet"], batch.rhs[i], tables["user"]),
        ):
            ids = getattr(batch, target)
            true = int(ids[i])
            cands = (ids[lo:hi].tolist() if in_batch else []) + uni[target][c * uniform : (c + 1) * uniform].tolist()
            cands = [k for k in cands if k != true]  # the positive and collisions with it never count
            query = known_table[known_id].unsqueeze(0)
            pos = model.score_candidates(target, query, rel, table[[true]])[0, 0]
            neg = model.score_candidates(target, query, rel, table[cands])[0] if cands else torch.zeros(0)
            if loss == "softmax":
                total += float(torch.logsumexp(torch.cat([pos[None], neg]), 0) - pos)
            elif loss == "ranking":
                total += float(torch.relu(margin - pos + neg).sum())
            else:
                total += float(
                    torch.nn.functional.softplus(-pos) + torch.nn.functional.softplus(neg).sum() / max(1, len(cands))
                )
    return total


@pytest.mark.parametrize("per_draw", [1, 2, None])
@pytest.mark.parametrize("loss", ["softmax", "logistic", "ranking"])
@pytest.mark.parametrize("in_batch,uniform", [(5, 7), (0, 6), (50, 3), (23, 0), (5, 0)])
def test_chunk_loss_matches_brute_force(loss: str, in_batch: int, uniform: int, per_draw: int | None) -> None:
    """per_draw: chunks sharing one uniform draw (1: PBG exactly; 2: pairs, the 5th chunk alone; None: batch)."""
    cfg, model, tables, batch = _setup(loss, "dot")
    scorer = BatchScorer(cfg, model, torch.device("cpu"), bf16=False)
    with torch.no_grad():
        got = scorer(
            batch,
            lambda etype, _side: ((etype, 0), tables[etype]),
            in_batch,
            uniform,
            torch.Generator().manual_seed(1),
            grad=False,
            scope="chunk",
            global_scope="batch" if per_draw is None else "chunk",
            chunks_per_draw=per_draw or 1,
        ).loss
        want = _brute_force(model, tables, batch, loss, in_batch, uniform, cfg.model.margin, per_draw)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_chunk_scope_rejects_relation_dependent_candidates() -> None:
    data = yaml.safe_load((REPO / "configs" / "twhin_seed.yaml").read_text())
    data["model"]["relation_sides"] = "rhs"
    data["train_data"]["in_batch_scope"] = "chunk"
    with pytest.raises(ConfigError, match=r"train_data.in_batch_scope: chunk scores mixed relations"):
        parse_config(data)


def test_chunk_gradients_match_autograd_reference() -> None:
    """Row gradients handed to the optimizer equal autograd through a plain dense formulation."""
    cfg, model, tables, batch = _setup("softmax", "dot")
    scorer = BatchScorer(cfg, model, torch.device("cpu"), bf16=False)
    for per_draw in (1, 2, None):
        res = scorer(
            batch,
            lambda etype, _side: ((etype, 0), tables[etype]),
            5,
            7,
            torch.Generator().manual_seed(1),
            scope="chunk",
            global_scope="batch" if per_draw is None else "chunk",
            chunks_per_draw=per_draw or 1,
        )
        got = {name: torch.zeros_like(t) for name, t in tables.items()}
        for g in res.gathered:
            got[g.key[0]].index_add_(0, g.ids, g.gradient().float())
        leaves = {name: t.clone().requires_grad_(True) for name, t in tables.items()}
        want_loss = _dense_loss(model, leaves, batch, 5, 7, per_draw)
        want_loss.backward()
        assert float(res.loss.detach()) == pytest.approx(float(want_loss.detach()), rel=1e-5)
        for name in tables:
            assert torch.allclose(got[name], leaves[name].grad, atol=1e-4), name
        model.zero_grad(set_to_none=True)


def _dense_loss(model, leaves, batch, in_batch, uniform, per_draw) -> torch.Tensor:
    """The softmax chunk loss written with plain autograd ops over the leaf tables (the reference)."""
    uni = _draws(in_batch, uniform, per_draw)
    total = torch.zeros(())
    for target, known_type, cand_type, known_ids, true_ids in (
        ("rhs", "user", "tweet", batch.lhs, batch.rhs),
        ("lhs", "tweet", "user", batch.rhs, batch.lhs),
    ):
        q = model.query(target, leaves[known_type][known_ids], batch.rel)
        for i in range(B):
            c = i // in_batch
            lo, hi = c * in_batch, min(B, c * in_batch + in_batch)
            own = true_ids[lo:hi]
            samples = uni[target][c * uniform : (c + 1) * uniform]
            cands = torch.cat([own, samples])
            cands = cands[cands != true_ids[i]]
            scores = leaves[cand_type][torch.cat([true_ids[i : i + 1], cands])] @ q[i]
            total = total + torch.logsumexp(scores, 0) - scores[0]
    return total

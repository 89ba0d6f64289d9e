"""PBG-style chunk negatives (train_data.in_batch_scope: chunk) against a per-edge brute force."""

from __future__ import annotations

import pytest
import torch
import yaml

from tbg.config import ConfigError, parse_config
from tbg.model.scoring import RelationModel
from tbg.train.step import Batch, BatchScorer

NU, NT, B = 30, 25, 23


def _setup(loss: str, comparator: str):
    with open("configs/twhin_seed.yaml") as fh:
        data = yaml.safe_load(fh)
    data["model"].update(loss=loss, comparator=comparator)
    cfg = parse_config(data)
    torch.manual_seed(0)
    model = RelationModel.from_config(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    tables = {"user": torch.randn(NU, 4), "tweet": torch.randn(NT, 4)}
    batch = Batch(torch.randint(0, NU, (B,)), torch.randint(0, NT, (B,)), torch.randint(0, 4, (B,)))
    return cfg, model, tables, batch


def _brute_force(model, tables, batch, loss, in_batch, uniform, margin) -> float:
    """Each edge against its chunk's other positives and the chunk's own uniform samples, one by one."""
    gen = torch.Generator().manual_seed(1)
    chunk = min(in_batch, B) if in_batch else B
    n_chunks = -(-B // chunk)
    uni = {
        "lhs": torch.randint(0, NU, (n_chunks * uniform,), generator=gen),
        "rhs": torch.randint(0, NT, (n_chunks * uniform,), generator=gen),
    }
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


@pytest.mark.parametrize("loss", ["softmax", "logistic", "ranking"])
@pytest.mark.parametrize("in_batch,uniform", [(5, 7), (0, 6), (50, 3), (23, 0)])
def test_chunk_loss_matches_brute_force(loss: str, in_batch: int, uniform: int) -> None:
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
        ).loss
        want = _brute_force(model, tables, batch, loss, in_batch, uniform, cfg.model.margin)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_chunk_scope_rejects_relation_dependent_candidates() -> None:
    with open("configs/twhin_seed.yaml") as fh:
        data = yaml.safe_load(fh)
    data["model"]["relation_sides"] = "rhs"
    data["train_data"]["in_batch_scope"] = "chunk"
    with pytest.raises(ConfigError, match=r"train_data.in_batch_scope: chunk scores mixed relations"):
        parse_config(data)

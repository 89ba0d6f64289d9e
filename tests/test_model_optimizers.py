"""Sparse row optimizers: only batch rows change, and touched rows match torch's dense optimizers."""

from __future__ import annotations

import pytest
import torch

from tbg.config import EmbeddingTableConfig, OptimizerConfig
from tbg.model.embeddings import init_partition
from tbg.model.optimizers import build_sparse_optimizer, coalesce


def _cfg(kind: str, **params) -> OptimizerConfig:
    from tbg.config import converter

    return converter.structure({kind: params}, OptimizerConfig)


ROWS = torch.tensor([1, 4, 6])


def _grads(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return torch.randn(3, 5, generator=g)


@pytest.mark.parametrize(
    ("kind", "params", "dense"),
    [
        ("sgd", {"lr": 0.1}, lambda p: torch.optim.SGD([p], lr=0.1)),
        ("adagrad", {"lr": 0.1, "eps": 1e-10}, lambda p: torch.optim.Adagrad([p], lr=0.1, eps=1e-10)),
        ("adam", {"lr": 0.01, "eps": 1e-8}, lambda p: torch.optim.SparseAdam([p], lr=0.01, eps=1e-8)),
    ],
)
def test_touched_rows_match_torch_untouched_bit_identical(kind, params, dense) -> None:
    table = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    before = table.clone()
    ref = torch.nn.Parameter(table.clone())
    opt = build_sparse_optimizer(table, _cfg(kind, **params))
    ref_opt = dense(ref)
    for step in range(3):
        g = _grads(step)
        opt.step(ROWS, g, params["lr"])
        full = torch.zeros(8, 5)
        full[ROWS] = g
        ref.grad = full.to_sparse() if kind == "adam" else full
        ref_opt.step()
    untouched = torch.ones(8, dtype=torch.bool)
    untouched[ROWS] = False
    assert torch.equal(table[untouched], before[untouched])  # bit-identical
    assert torch.allclose(table[ROWS], ref.detach()[ROWS], atol=1e-6)
    assert not torch.allclose(table[ROWS], before[ROWS])


def test_row_adagrad_formula() -> None:
    table = torch.ones(4, 2)
    opt = build_sparse_optimizer(table, _cfg("row_adagrad", lr=0.5))
    g = torch.tensor([[3.0, 4.0]])
    opt.step(torch.tensor([2]), g, 0.5)
    acc = (9 + 16) / 2  # one accumulator per row: mean of g²
    assert torch.allclose(table[2], torch.tensor([1.0, 1.0]) - 0.5 * g[0] / (acc**0.5 + 1e-10))
    assert opt.state["sum"].shape == (4,) and float(opt.state["sum"][2]) == acc
    assert torch.equal(table[[0, 1, 3]], torch.ones(3, 2))


def test_sgd_momentum_lazy_and_zero_eps_adagrad_finite() -> None:
    table = torch.zeros(3, 2)
    opt = build_sparse_optimizer(table, _cfg("sgd", lr=1.0, momentum=0.5))
    opt.step(torch.tensor([0]), torch.ones(1, 2), 1.0)
    opt.step(torch.tensor([0]), torch.ones(1, 2), 1.0)
    assert torch.allclose(table[0], torch.tensor([-2.5, -2.5]))  # -(1) - (0.5 + 1)
    t2 = torch.zeros(3, 2)
    ada = build_sparse_optimizer(t2, _cfg("adagrad", lr=0.1))  # TwHIN's eps 0
    ada.step(torch.tensor([1]), torch.tensor([[0.0, 2.0]]), 0.1)
    assert torch.isfinite(t2).all() and float(t2[1, 0]) == 0.0


def test_fp16_storage_fp32_math() -> None:
    table_cfg = EmbeddingTableConfig(name="t", embedding_dim=4, optimizer=_cfg("sgd", lr=0.1), data_type="fp16")
    part = init_partition(table_cfg, 100, 10, seed=0, part=0)
    assert part.dtype == torch.float16 and float(part.abs().max()) <= 0.1 + 1e-3
    opt = build_sparse_optimizer(part, table_cfg.optimizer)
    before = part[3].float().clone()
    opt.step(torch.tensor([3]), torch.ones(1, 4), 0.1)
    assert part.dtype == torch.float16
    assert torch.allclose(part[3].float(), before - 0.1, atol=1e-3)


def test_coalesce_sums_duplicates() -> None:
    rows, g, live = coalesce(torch.tensor([5, 2, 5]), torch.tensor([[1.0], [2.0], [3.0]]))
    assert live.tolist() == [True, True, False]  # one slot per gathered row: a repeated id's later slots are padding
    assert rows[live].tolist() == [2, 5] and g.squeeze(1).tolist() == [2.0, 4.0, 0.0]


def test_init_is_seeded_and_scaled() -> None:
    cfg = EmbeddingTableConfig(name="t", embedding_dim=8, optimizer=_cfg("sgd", lr=0.1))
    a = init_partition(cfg, 400, 50, seed=3, part=1)
    assert torch.equal(a, init_partition(cfg, 400, 50, seed=3, part=1))
    assert not torch.equal(a, init_partition(cfg, 400, 50, seed=3, part=0))
    assert float(a.abs().max()) <= (1 / 400) ** 0.5
    cfg.init_scale = 0.001
    b = init_partition(cfg, 400, 5000, seed=3, part=1)
    assert abs(float(b.std()) - 0.001) < 1e-4


@pytest.mark.parametrize(
    ("kind", "params", "dense"),
    [
        ("sgd", {"lr": 0.1, "momentum": 0.9}, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
        ("adagrad", {"lr": 0.1, "eps": 1e-10}, lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10)),
        ("row_adagrad", {"lr": 0.1, "eps": 1e-10}, lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10)),
        ("adam", {"lr": 0.01, "eps": 1e-8}, lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-8)),
    ],
)
def test_relation_optimizer_matches_torch_dense(kind, params, dense) -> None:
    """Relation parameters (2-D and 3-D, one without a gradient some steps) move exactly as torch.optim moves them."""
    from tbg.model.optimizers import RelationOptimizer

    gen = torch.Generator().manual_seed(0)
    ours = [
        torch.nn.Parameter(torch.randn(4, 3, generator=gen)),
        torch.nn.Parameter(torch.randn(4, 2, 2, generator=gen)),
    ]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt, ref_opt = RelationOptimizer(ours, _cfg(kind, **params)), dense(ref)
    for step in range(4):
        for i, (p, q) in enumerate(zip(ours, ref)):
            if i == 1 and step == 1:
                continue  # no gradient this step: both leave it alone
            g = torch.randn(p.shape, generator=torch.Generator().manual_seed(10 * step + i))
            g[0] = 0  # a relation absent from the batch still gets a (zero) dense update
            p.grad, q.grad = g.clone(), g.clone()
        opt.step(params["lr"])
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in ours)
    for p, q in zip(ours, ref):
        assert torch.allclose(p, q, atol=1e-6), kind
    state = opt.state_dict()
    fresh = RelationOptimizer(ours, _cfg(kind, **params))
    fresh.load_state_dict(state)
    assert fresh.state_dict().keys() == state.keys()


def test_relation_optimizer_refuses_torch_optim_state() -> None:
    from tbg.errors import CheckpointError
    from tbg.model.optimizers import RelationOptimizer

    opt = RelationOptimizer([torch.nn.Parameter(torch.zeros(2, 3))], _cfg("adagrad", lr=0.1))
    with pytest.raises(CheckpointError, match="older tbg"):
        opt.load_state_dict({"state": {}, "param_groups": [{"lr": 0.1}]})


class _LostWrites(torch.Tensor):
    """State whose in-place accumulations vanish, as when a concurrent Hogwild worker writes back a stale value
    over this step's increment."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        if func in (torch.Tensor.index_add_, torch.Tensor.add_) and isinstance(args[0], cls):
            return args[0]
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["adagrad", "row_adagrad"])
def test_adagrad_step_is_bounded_when_hogwild_drops_its_accumulator_write(kind) -> None:
    """Adagrad's step divides by the accumulator: it must be the one holding this step's own squared gradient,
    even when the shared state lost that write (a first step then moves at most lr per coordinate or lr·√D per
    row, never g / eps)."""
    table = torch.zeros(8, 5)
    opt = build_sparse_optimizer(table, _cfg(kind, lr=0.1, eps=1e-10))
    opt.state["sum"] = opt.state["sum"].as_subclass(_LostWrites)
    grad = _grads(0)
    opt.step(ROWS, grad, lr=0.1)
    moved = table[ROWS]
    assert torch.isfinite(moved).all()
    if kind == "adagrad":
        assert moved.abs().max() <= 0.1 + 1e-6
    else:
        assert moved.norm(dim=1).max() <= 0.1 * 5**0.5 + 1e-6

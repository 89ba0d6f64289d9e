"""Sparse row optimizers for embedding tables: each step reads and writes only the batch's rows.

``step(rows, grad, lr)`` takes *unique* row ids and their summed gradients (fp32), never a dense
table-sized gradient.  State tensors live beside the table and are saved with its shard.  Math is fp32
even for fp16 tables.  Semantics on the touched rows:

- ``sgd``: ``p -= lr * g`` (momentum: a dense buffer updated only on touched rows, i.e. lazy momentum);
- ``adagrad``: elementwise ``G += g²; p -= lr * g / (sqrt(G) + eps)`` (= ``torch.optim.Adagrad``);
- ``row_adagrad``: PBG's row-wise Adagrad, one accumulator per row: ``G += mean(g²)``;
- ``adam``: lazy Adam with a global step count (= ``torch.optim.SparseAdam``).

A zero eps (TwHIN's Adagrad default) would divide 0 by 0 on untouched coordinates, so eps is at least 1e-10.
"""

from __future__ import annotations

import numpy as np
import torch

from tbg.config import OptimizerConfig

MIN_EPS = 1e-10


def _zeros(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """fp32 state; large CPU buffers on transparent huge pages (see tbg.train.runtime.hugepage_empty)."""
    if device.type == "cpu":
        from tbg.train.runtime import hugepage_empty

        return hugepage_empty(shape, torch.float32).zero_()
    return torch.zeros(shape, dtype=torch.float32, device=device)


class SparseOptimizer:
    """Base: holds the table and its state; subclasses implement :meth:`_delta`."""

    state_names: tuple[str, ...] = ()

    def __init__(self, table: torch.Tensor, cfg: OptimizerConfig) -> None:
        self.table = table
        self.cfg = cfg
        self.state: dict[str, torch.Tensor] = self._init_state(table)

    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, rows: torch.Tensor, grad: torch.Tensor, lr: float, owned: bool = False) -> None:
        """Move the (unique) ``rows`` by their update: one ``index_add_`` on fp32 tables (the rows are never
        gathered: measured 1.6 vs 3.5 ms for 35k rows of 100 against gather + write back), else in fp32 and
        written back in the table's dtype.  ``owned``: the caller gives ``grad`` up, so it is used as scratch
        instead of copied."""
        if rows.numel() == 0:
            return
        grad = grad.float() if owned else grad.to(torch.float32, copy=True)
        delta = self._delta(rows, grad, lr)
        if self.table.dtype == torch.float32:
            self.table.index_add_(0, rows, delta)
        else:
            self.table.index_copy_(0, rows, self.table.index_select(0, rows).float().add_(delta).to(self.table.dtype))

    def _delta(self, rows: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
        """The change of the rows' parameters (updating the optimizer state as it goes); may reuse ``grad``."""
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: t.detach().cpu().numpy() for name, t in self.state.items()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for name in self.state:
            if name in arrays and tuple(arrays[name].shape) == tuple(self.state[name].shape):
                self.state[name].copy_(torch.from_numpy(np.asarray(arrays[name])))


class SparseSGD(SparseOptimizer):
    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.params.momentum > 0:
            return {"momentum": _zeros(tuple(table.shape), table.device)}
        return {}

    def _delta(self, rows, grad, lr):
        if "momentum" in self.state:
            buf = self.state["momentum"].index_select(0, rows).mul_(self.cfg.params.momentum).add_(grad)
            self.state["momentum"].index_copy_(0, rows, buf)
            grad = buf.clone()
        return grad.mul_(-lr)


class SparseAdagrad(SparseOptimizer):
    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": _zeros(tuple(table.shape), table.device)}

    def _delta(self, rows, grad, lr):
        acc = self.state["sum"].index_select(0, rows).addcmul_(grad, grad)
        self.state["sum"].index_copy_(0, rows, acc)
        eps = max(self.cfg.params.eps, MIN_EPS)
        return grad.div_(acc.sqrt_().add_(eps)).mul_(-lr)


class SparseRowAdagrad(SparseOptimizer):
    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": torch.zeros(table.shape[0], dtype=torch.float32, device=table.device)}

    def _delta(self, rows, grad, lr):
        mean_sq = torch.linalg.vector_norm(grad, dim=-1).square_().div_(grad.shape[-1])
        acc = self.state["sum"].index_select(0, rows).add_(mean_sq)
        self.state["sum"].index_copy_(0, rows, acc)
        eps = max(self.cfg.params.eps, MIN_EPS)
        return grad.mul_(acc.sqrt_().add_(eps).reciprocal_().mul_(-lr).unsqueeze(-1))


class SparseAdam(SparseOptimizer):
    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        zeros = _zeros(tuple(table.shape), table.device)
        return {
            "exp_avg": zeros,
            "exp_avg_sq": _zeros(tuple(table.shape), table.device),
            "step": torch.zeros(1, dtype=torch.float64),
        }

    def _delta(self, rows, grad, lr):
        beta1, beta2 = self.cfg.params.betas
        self.state["step"] += 1
        step = float(self.state["step"].item())
        m = self.state["exp_avg"].index_select(0, rows).mul_(beta1).add_(grad, alpha=1 - beta1)
        v = self.state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self.state["exp_avg"].index_copy_(0, rows, m)
        self.state["exp_avg_sq"].index_copy_(0, rows, v)
        bias1, bias2 = 1 - beta1**step, 1 - beta2**step
        denom = v.sqrt_().div_(bias2**0.5).add_(max(self.cfg.params.eps, MIN_EPS))
        return m.div_(denom).mul_(-lr / bias1)


SPARSE_OPTIMIZERS: dict[str, type[SparseOptimizer]] = {
    "sgd": SparseSGD,
    "adagrad": SparseAdagrad,
    "row_adagrad": SparseRowAdagrad,
    "adam": SparseAdam,
}


def build_sparse_optimizer(table: torch.Tensor, cfg: OptimizerConfig) -> SparseOptimizer:
    return SPARSE_OPTIMIZERS[cfg.kind](table, cfg)


def build_dense_optimizer(params: list[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Optimizer of the (small, dense) relation parameters from ``model.translation_optimizer``."""
    p = cfg.params
    if not params:  # every operator is `none`: keep a valid (no-op) optimizer so state save/load is uniform
        params = [torch.nn.Parameter(torch.zeros(0))]
    if cfg.kind == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum)
    if cfg.kind == "adam":
        return torch.optim.Adam(params, lr=p.lr, betas=p.betas, eps=max(p.eps, MIN_EPS))
    # adagrad and row_adagrad: the relation parameters are tiny, so plain elementwise Adagrad
    return torch.optim.Adagrad(params, lr=p.lr, eps=max(p.eps, MIN_EPS))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def coalesce(
    rows: torch.Tensor | list[torch.Tensor], grad: torch.Tensor | list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique row ids and their summed fp32 gradients (duplicates arise when an entity appears twice).

    Takes one (rows, grad) pair or lists of them (a step's several gathers): each part is added into the
    result on its own, so the gradients are never concatenated into one more copy.
    """
    rows_list = rows if isinstance(rows, list) else [rows]
    grads = grad if isinstance(grad, list) else [grad]
    uniq, inverse = torch.unique(torch.cat(rows_list), return_inverse=True)
    summed = torch.zeros((uniq.shape[0], grads[0].shape[1]), dtype=torch.float32, device=grads[0].device)
    start = 0
    for part in grads:
        summed.index_add_(0, inverse[start : start + part.shape[0]], part.float())
        start += part.shape[0]
    return uniq, summed

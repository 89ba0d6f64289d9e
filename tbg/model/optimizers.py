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

from tbg.config import AdagradConfig, OptimizerConfig
from tbg.errors import CheckpointError

MIN_EPS = 1e-10


def _zeros(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """fp32 state; large CPU buffers on transparent huge pages (see tbg.runtime.hugepage_empty)."""
    if device.type == "cpu":
        from tbg.runtime import hugepage_empty

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

    def step(self, rows: torch.Tensor, grad: torch.Tensor, lr: float, owned: bool = False) -> torch.Tensor | None:
        """Move the (unique) ``rows`` by their update: one ``index_add_`` on fp32 tables (the rows are never
        gathered and written back, which costs about twice as much), else in fp32 and written back in the
        table's dtype.  ``owned``: the caller gives ``grad`` up, so it is used as scratch instead of copied.
        Returns the update applied (fp32, [rows, dim]; None for no rows), which the trainer checks for
        non-finite values without gathering the rows again."""
        if rows.numel() == 0:
            return None
        grad = grad.float() if owned else grad.to(torch.float32, copy=True)
        delta = self._delta(rows, grad, lr)
        if self.table.dtype == torch.float32:
            self.table.index_add_(0, rows, delta)
        else:
            self.table.index_copy_(0, rows, self.table.index_select(0, rows).float().add_(delta).to(self.table.dtype))
        return delta

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


class RelationOptimizer:
    """The relation parameters' optimizer (``model.translation_optimizer``): the row optimizers above, stepping
    every row of each small parameter — the semantics of ``torch.optim``'s SGD/Adam/Adagrad on dense gradients.

    Not ``torch.optim`` itself: constructing one imports torch's compiler modules, which cost more resident
    memory than the WordNet embedding table (docs/benchmarks.md).  ``row_adagrad`` means elementwise Adagrad
    here (the parameters are tiny).
    """

    def __init__(self, params: list[torch.nn.Parameter], cfg: OptimizerConfig) -> None:
        if cfg.kind == "row_adagrad":
            cfg = OptimizerConfig(adagrad=AdagradConfig(lr=cfg.params.lr, eps=cfg.params.eps))
        self.params = [p for p in params if p.numel()]
        self.rows = [torch.arange(p.shape[0], device=p.device) for p in self.params]
        self.opts = [build_sparse_optimizer(p.data.view(p.shape[0], -1), cfg) for p in self.params]

    def step(self, lr: float, grads_of: list[torch.nn.Parameter] | None = None) -> None:
        """Apply and clear the parameters' gradients (a parameter without one is left alone, as torch.optim).

        ``grads_of``: take the gradients from these parameters instead (a Hogwild worker's replica, whose
        parameters share this optimizer's storage but hold their own ``.grad``; same order and shapes).
        """
        sources = self.params if grads_of is None else [p for p in grads_of if p.numel()]
        for p, rows, opt in zip(sources, self.rows, self.opts, strict=True):
            if p.grad is not None:
                opt.step(rows, p.grad.view(p.shape[0], -1), lr, owned=True)
                p.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"{i}/{name}": arr for i, opt in enumerate(self.opts) for name, arr in opt.state_arrays().items()}

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        if "param_groups" in arrays:  # a torch.optim state dict: checkpoints of tbg before this optimizer
            raise CheckpointError(
                "relation optimizer state was written by an older tbg (torch.optim): resume with --fresh, or"
                " start from it with training.initial_checkpoint_dir"
            )
        for i, opt in enumerate(self.opts):
            opt.load_state({k.split("/", 1)[1]: v for k, v in arrays.items() if k.split("/", 1)[0] == str(i)})


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

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

import threading

import numpy as np
import torch

from tbg.config import AdagradConfig, OptimizerConfig
from tbg.errors import CheckpointError

NEG_LRS_KEPT = 8  # -lr tensors an optimizer keeps (the lr values of the steps in flight and a few before)

MIN_EPS = 1e-10
CONCAT_ELEMENTS = 1 << 20  # coalesce: gradients of at most this many elements are concatenated, added at once


def _zeros(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """fp32 state; large CPU buffers on transparent huge pages (see tbg.runtime.hugepage_empty)."""
    if device.type == "cpu":
        from tbg.runtime import hugepage_empty

        return hugepage_empty(shape, torch.float32).zero_()
    return torch.zeros(shape, dtype=torch.float32, device=device)


Rows = torch.Tensor | None  # row ids of a sparse step, or None: every row (a dense step)


class SparseOptimizer:
    """Base: holds the table and its state; subclasses implement :meth:`_delta`.

    A sparse step's ``rows`` may repeat an id in slots whose gradient is zero and whose ``live`` flag is
    False (the padding of :func:`coalesce`, whose output size never depends on the data): every write is an
    ``index_add_`` of an increment, so such slots change nothing, and optimizers whose state moves without a
    gradient (momentum, Adam) scale their increments by ``live``.
    """

    state_names: tuple[str, ...] = ()
    uses_live = False  # True: padding slots must be masked (the state moves without a gradient)

    def __init__(self, table: torch.Tensor, cfg: OptimizerConfig, state: dict[str, np.ndarray] | None = None) -> None:
        """``state``: saved state arrays (as :meth:`load_state`); fp32 CPU arrays of the right shape become the
        state without a copy (a partition read from its file is never held twice)."""
        self.table = table
        self.cfg = cfg
        self._neg_lrs: dict[float, torch.Tensor] = {}  # -lr tensors by lr, the latest few
        self._neg_lrs_lock = threading.Lock()
        eps = max(getattr(cfg.params, "eps", MIN_EPS), MIN_EPS)  # (sgd has none)
        self._eps_tensor = torch.full((), eps, dtype=torch.float32, device=table.device)
        self._given = state or {}
        self._adopted: set[str] = set()
        self.state: dict[str, torch.Tensor] = self._init_state(table)
        rest = {k: v for k, v in self._given.items() if k not in self._adopted}
        self._given = {}
        if rest:
            self.load_state(rest)

    def _zeros(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """State ``name``: the given array itself where it fits, else zeros (:func:`_zeros`)."""
        arr = self._given.get(name)
        if (
            arr is not None
            and device.type == "cpu"
            and tuple(arr.shape) == shape
            and arr.dtype == np.float32
            and arr.flags.c_contiguous
            and arr.flags.writeable
        ):
            self._adopted.add(name)
            return torch.from_numpy(arr)
        return _zeros(shape, device)

    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(
        self, rows: torch.Tensor, grad: torch.Tensor, lr: float, owned: bool = False, live: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Move ``rows`` (unique, or padded as above with ``live``) by their update: one ``index_add_`` (the rows
        are never gathered and written back, which costs about twice as much); tables in fp16/bf16 add the fp32
        update rounded to their dtype.  ``owned``: the caller gives ``grad`` up, so it is used as scratch
        instead of copied.  Returns the update applied (fp32, [rows, dim], zero in padding slots; None for no
        rows), which the trainer checks for non-finite values without gathering the rows again."""
        if rows.numel() == 0:
            return None
        if not owned:
            grad = grad.to(torch.float32, copy=True)
        elif grad.dtype != torch.float32:
            grad = grad.float()
        mask = None if live is None or not self.uses_live else live.to(torch.float32).unsqueeze(-1)
        delta = self._delta(rows, grad, lr, mask)
        self.table.index_add_(0, rows, delta if self.table.dtype == torch.float32 else delta.to(self.table.dtype))
        return delta

    def dense_step(self, grad: torch.Tensor, lr: float) -> None:
        """Update every row with ``grad`` (same shape as the table): plain in-place tensor ops, no row ids."""
        delta = self._delta(None, grad.float().clone(), lr, None)
        self.table.add_(delta if self.table.dtype == torch.float32 else delta.to(self.table.dtype))

    def _take(self, name: str, rows: Rows) -> torch.Tensor:
        """The rows' current state (a copy: the caller may change it)."""
        state = self.state[name]
        return state.clone() if rows is None else state.index_select(0, rows)

    def _accumulate(self, name: str, rows: Rows, inc: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Add ``inc`` (times ``alpha``) to the rows' state and return their new values, computed from this
        step's own read: under Hogwild another worker's concurrent write may drop the increment from the
        shared state, and a value read back after it could then miss it (an accumulator of about zero is a
        huge step); the value returned always holds it."""
        acc = self._take(name, rows).add_(inc, alpha=alpha)
        self._add(name, rows, inc, alpha=alpha)
        return acc

    def _add(self, name: str, rows: Rows, inc: torch.Tensor, alpha: float = 1.0) -> None:
        state = self.state[name]
        if rows is None:
            state.add_(inc, alpha=alpha)
        else:
            state.index_add_(0, rows, inc, alpha=alpha)

    def _neg_lr(self, lr: float) -> torch.Tensor:
        """``-lr`` as a 0-dim fp32 tensor on the table's device, made once per lr value (an in-place op with a
        Python float converts it to a tensor on every call).  A tensor is never refilled: Hogwild workers at
        different steps of an lr schedule each keep their own step's value."""
        out = self._neg_lrs.get(lr)
        if out is None:
            with np.errstate(over="ignore"):  # an lr beyond fp32 is -inf
                out = torch.full((), float(np.float32(-lr)), dtype=torch.float32, device=self.table.device)
            with self._neg_lrs_lock:
                while len(self._neg_lrs) >= NEG_LRS_KEPT:
                    del self._neg_lrs[next(iter(self._neg_lrs))]
                self._neg_lrs[lr] = out
        return out

    def _eps(self) -> torch.Tensor:
        """eps (at least MIN_EPS) as a 0-dim tensor on the table's device, made with the optimizer: a Python
        float in an in-place op is turned into a tensor on every call."""
        return self._eps_tensor

    def _delta(self, rows: Rows, grad: torch.Tensor, lr: float, live: torch.Tensor | None) -> torch.Tensor:
        """The change of the rows' parameters (updating the optimizer state as it goes); may reuse ``grad``."""
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: t.detach().cpu().numpy() for name, t in self.state.items()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for name in self.state:
            if name in arrays and tuple(arrays[name].shape) == tuple(self.state[name].shape):
                self.state[name].copy_(torch.from_numpy(np.asarray(arrays[name])))


class SparseSGD(SparseOptimizer):
    @property
    def uses_live(self) -> bool:  # type: ignore[override]
        return self.cfg.params.momentum > 0

    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.params.momentum > 0:
            return {"momentum": self._zeros("momentum", tuple(table.shape), table.device)}
        return {}

    def _delta(self, rows, grad, lr, live):
        if "momentum" in self.state:
            old = self._take("momentum", rows)
            new = old.mul(self.cfg.params.momentum).add_(grad)
            inc = new - old
            self._add("momentum", rows, inc if live is None else inc.mul_(live))
            grad = new if live is None else new.mul_(live)
        return grad.mul_(self._neg_lr(lr))


class SparseAdagrad(SparseOptimizer):
    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": self._zeros("sum", tuple(table.shape), table.device)}

    def _delta(self, rows, grad, lr, live):
        acc = self._accumulate("sum", rows, grad * grad)  # a padding slot adds 0
        return grad.div_(acc.sqrt_().add_(self._eps())).mul_(self._neg_lr(lr))


class SparseRowAdagrad(SparseOptimizer):
    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": self._zeros("sum", (table.shape[0],), table.device)}

    def _delta(self, rows, grad, lr, live):
        acc = self._accumulate("sum", rows, torch.linalg.vector_norm(grad, dim=-1).square_(), alpha=1 / grad.shape[-1])
        return grad.mul_(acc.sqrt_().add_(self._eps()).reciprocal_().mul_(self._neg_lr(lr)).unsqueeze(-1))


class SparseAdam(SparseOptimizer):
    """The step count lives on the host (a Python int mirrored into the ``step`` state): bias corrections
    are Python floats, so a step never reads a tensor back."""

    uses_live = True

    def _init_state(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        self._steps = 0
        return {
            "exp_avg": self._zeros("exp_avg", tuple(table.shape), table.device),
            "exp_avg_sq": self._zeros("exp_avg_sq", tuple(table.shape), table.device),
            "step": torch.zeros(1, dtype=torch.float64),
        }

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        super().load_state(arrays)
        self._steps = int(self.state["step"][0])

    def _delta(self, rows, grad, lr, live):
        beta1, beta2 = self.cfg.params.betas
        self._steps += 1
        self.state["step"].fill_(self._steps)
        m_old, v_old = self._take("exp_avg", rows), self._take("exp_avg_sq", rows)
        m = m_old.mul(beta1).add_(grad, alpha=1 - beta1)
        v = v_old.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_inc, v_inc = m - m_old, v - v_old
        if live is not None:
            m_inc.mul_(live)
            v_inc.mul_(live)
        self._add("exp_avg", rows, m_inc)
        self._add("exp_avg_sq", rows, v_inc)
        bias1, bias2 = 1 - beta1**self._steps, 1 - beta2**self._steps
        denom = v.sqrt_().div_(bias2**0.5).add_(max(self.cfg.params.eps, MIN_EPS))
        out = m.div_(denom).mul_(-lr / bias1)
        return out if live is None else out.mul_(live)


SPARSE_OPTIMIZERS: dict[str, type[SparseOptimizer]] = {
    "sgd": SparseSGD,
    "adagrad": SparseAdagrad,
    "row_adagrad": SparseRowAdagrad,
    "adam": SparseAdam,
}


def build_sparse_optimizer(
    table: torch.Tensor, cfg: OptimizerConfig, state: dict[str, np.ndarray] | None = None
) -> SparseOptimizer:
    return SPARSE_OPTIMIZERS[cfg.kind](table, cfg, state)


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
        self.opts = [build_sparse_optimizer(p.data.view(p.shape[0], -1), cfg) for p in self.params]
        # Adagrad's eps as tensors of the parameters' shapes, made here: a Python eps becomes a tensor per call
        self._eps = (
            {id(o): torch.full_like(o.state["sum"], max(cfg.params.eps, MIN_EPS)) for o in self.opts}
            if cfg.kind == "adagrad"
            else {}
        )

    def step(self, lr: float, grads_of: list[torch.nn.Parameter] | None = None) -> None:
        """Apply and clear the parameters' gradients (a parameter without one is left alone, as torch.optim):
        dense in-place updates of whole parameters, no row ids.

        ``grads_of``: take the gradients from these parameters instead (a Hogwild worker's replica, whose
        parameters share this optimizer's storage but hold their own ``.grad``; same order and shapes).
        """
        sources = self.params if grads_of is None else [p for p in grads_of if p.numel()]
        pairs = [(p, opt) for p, opt in zip(sources, self.opts, strict=True) if p.grad is not None]
        if pairs and self._fused(pairs, lr):
            for p, _ in pairs:
                p.grad = None
            return
        for p, opt in pairs:
            opt.dense_step(p.grad.view(p.shape[0], -1), lr)
            p.grad = None

    def _fused(self, pairs: list[tuple[torch.nn.Parameter, SparseOptimizer]], lr: float) -> bool:
        """Plain SGD and Adagrad on every parameter at once (``torch._foreach_*``: a few ops per step, not a
        few per parameter); False for the kinds whose state moves without a gradient (momentum, Adam)."""
        cfg = self.opts[0].cfg
        params = [opt.table for _, opt in pairs]
        grads = [p.grad.view(opt.table.shape) for p, opt in pairs]
        if cfg.kind == "sgd" and cfg.params.momentum == 0:
            torch._foreach_add_(params, grads, alpha=-lr)
            return True
        if cfg.kind == "adagrad":
            sums = [opt.state["sum"] for _, opt in pairs]
            # the new sums from this step's own read, as SparseOptimizer._accumulate (Hogwild-safe)
            std = torch._foreach_addcmul(sums, grads, grads)
            torch._foreach_addcmul_(sums, grads, grads)
            torch._foreach_sqrt_(std)
            torch._foreach_add_(std, [self._eps[id(opt)] for _, opt in pairs])
            torch._foreach_addcdiv_(params, grads, std, value=-lr)
            return True
        return False

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
    rows: torch.Tensor | list[torch.Tensor], grad: torch.Tensor | list[torch.Tensor], live: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Row ids with their summed fp32 gradients, one live slot per distinct id (duplicates arise when an
    entity appears twice), and which slots are live: ``(ids [M], grads [M, D], live [M])`` for M gathered rows
    (``live=False``: None instead of the flags, for optimizers that never read them).

    Sync-free: M is the number of rows gathered, not of distinct ones (which only the device knows).  The
    ids are sorted; each row's gradient is added into the slot of its id's first occurrence (a binary search
    of the sorted ids), so the other slots of a repeated id keep that id with a zero gradient and are not
    live; :meth:`SparseOptimizer.step` applies them as no-ops.  Takes one (rows, grad) pair or lists of them
    (a step's several gathers): each part is added into the result on its own, never concatenated.
    """
    rows_list = rows if isinstance(rows, list) else [rows]
    grads = grad if isinstance(grad, list) else [grad]
    return coalesce_tables([(rows_list, grads)], [0], live)[0]


def coalesce_tables(
    tables: list[tuple[list[torch.Tensor], list[torch.Tensor]]], offsets: list[int], live: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """:func:`coalesce` of several tables' (row id parts, gradient parts) at once, with one sort and one
    gradient buffer (their gradients of one width D): table ``t``'s ids are shifted by ``offsets[t]`` (at least
    the rows of the tables before it, so the shifted ranges never overlap), which makes the sorted ids table
    0's M_0 slots, then table 1's, ...: static slices, no host sync.  Returns each table's ``(ids, grads,
    live)`` in its own ids; fewer ops per step than one coalesce per table."""
    shifted = [[i if off == 0 else i + off for i in parts] for (parts, _), off in zip(tables, offsets, strict=True)]
    flat = [ids for parts in shifted for ids in parts]
    ids = torch.cat(flat) if len(flat) > 1 else flat[0]
    size = ids.shape[0]
    uniq = torch.sort(ids)[0]
    flags = None
    if live:  # slot s: its id's first occurrence
        flags = torch.ones(size, dtype=torch.bool, device=ids.device)
        torch.ne(uniq[1:], uniq[:-1], out=flags[1:])
    grads = [g for _, parts in tables for g in parts]
    summed = torch.zeros((size, grads[0].shape[1]), dtype=torch.float32, device=ids.device)
    # the first sorted position holding each row's id; small gradients are added in one call (the copy of
    # their concatenation costs less than an op per part), large ones part by part (no copy)
    if len(grads) > 1 and size * grads[0].shape[1] <= CONCAT_ELEMENTS:
        joined = torch.cat(grads)
        summed.index_add_(0, torch.searchsorted(uniq, ids), joined if joined.dtype == torch.float32 else joined.float())
    else:
        for id_part, part in zip(flat, grads, strict=True):
            summed.index_add_(
                0, torch.searchsorted(uniq, id_part), part if part.dtype == torch.float32 else part.float()
            )
    if len(tables) == 1:
        return [(uniq, summed, flags)]
    sizes = [sum(p.shape[0] for p in parts) for parts in shifted]
    rows, sums = uniq.split(sizes), summed.split(sizes)
    live_parts = [None] * len(tables) if flags is None else flags.split(sizes)
    return [(r if off == 0 else r - off, g, f) for r, g, f, off in zip(rows, sums, live_parts, offsets, strict=True)]

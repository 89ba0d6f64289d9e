"""The memory budget (``runtime.memory_budget``): size strings, and the plan that fits a run into the budget.

What `tbg train` holds, and what the plan counts (docs/memory.md):

- the tables of unpartitioned entity types (num_partitions 1), with their optimizer state, always resident;
- the partitions of the current bucket, with their optimizer state (``resident``: the worst bucket, where a
  type on both sides has two different partitions resident);
- the partitions in flight around a bucket change (``in_flight``): the next bucket's partitions read ahead, and
  the previous bucket's ones being written back, one side's worth each (the bucket order changes one side at
  a time);
- the edge chunk: the chunk being trained plus the next one being read and shuffled (``EDGE_BYTES`` per edge).

Everything else (interpreter, torch, batch scratch, graph metadata) is the fixed overhead that docs/memory.md
states (at most ``FIXED_OVERHEAD``).  ``num_partitions: auto`` picks the smallest P whose plan fits with the
in-flight partitions (so loads and write-backs overlap training); a budget that cannot hold even the
resident partitions is refused with one line.  P is fixed when the graph is imported, so `tbg import` resolves
``auto`` (from the entity counts it has just read) and every later command takes P from the graph.

Torch-free: the importer uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tbg.errors import ConfigError

AUTO = "auto"
FIXED_OVERHEAD = 600 << 20  # interpreter + torch + batch scratch + metadata, on top of the budget (docs/memory.md)
TRIM_ABOVE = 3 * FIXED_OVERHEAD // 4  # a budgeted run trims the heap at a bucket change past budget + this
EDGE_BYTES = 80  # per edge of the chunk: int64 lhs/rhs/rel + weight training, plus the next chunk being shuffled
EDGE_SHARE = 8  # the edge chunks take at most 1/EDGE_SHARE of the budget
MIN_CHUNK_EDGES = 1 << 14
SMALL_SHARE = 16  # an `auto` table under 1/SMALL_SHARE of the budget stays unpartitioned (if the rest fits)
MAX_AUTO_PARTITIONS = 256

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
    "t": 1000**4, "tb": 1000**4, "tib": 1 << 40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes of ``768MiB``, ``8GiB``, ``2.5GB``, ``1000000`` (binary units: KiB/MiB/GiB/TiB; decimal: KB/MB/GB/TB)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError(f"must be > 0, got {text}")
        return text
    m = _SIZE.match(str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"must be a size such as 768MiB or 8GiB, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"must be > 0, got {text!r}")
    return value


def format_size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def state_floats_per_row(optimizer: Any, dim: int) -> int:
    """fp32 optimizer state per table row (tbg.model.optimizers)."""
    kind = optimizer.kind
    if kind == "adagrad":
        return dim
    if kind == "row_adagrad":
        return 1
    if kind == "adam":
        return 2 * dim
    return dim if optimizer.params.momentum > 0 else 0  # sgd


def row_bytes(table: Any) -> int:
    """Bytes of one row of a table: the vector in its storage dtype plus its optimizer state."""
    width = 2 if str(table.data_type) == "fp16" else 4
    return table.embedding_dim * width + 4 * state_floats_per_row(table.optimizer, table.embedding_dim)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes of each part of a run under ``budget`` (None: no budget, nothing bounded beyond the partitions)."""

    budget: int | None
    partitions: dict[str, int]
    partition_bytes: dict[str, int]  # largest partition of each type (whole table when unpartitioned)
    fixed: int  # unpartitioned tables
    resident: int  # the current bucket's partitions, worst bucket
    in_flight: int  # one side's partitions read ahead + one side's being written back
    chunk_edges: int
    edges: int  # bytes of the edge chunks

    @property
    def capacity(self) -> int | None:
        """Bytes the partition store may hold in partitions (resident + read ahead + being written back)."""
        return None if self.budget is None else self.budget - self.fixed - self.edges

    @property
    def unit_bytes(self) -> int:
        """Bytes of the partitions one side of a bucket changes (a partition index's tables on that side)."""
        return self.in_flight // 2

    @property
    def buffer_slots(self) -> int | None:
        """Partition indices the store may keep resident (tbg/train/partition_buffer.py): as many as fit beside
        one in flight (read ahead, or written back), at least a bucket's own two; None without a budget or
        room for the in-flight partitions (then only the bucket's own are resident)."""
        capacity = self.capacity
        if capacity is None or not self.overlaps or self.unit_bytes <= 0:
            return None
        return max(2, capacity // self.unit_bytes - 1)

    @property
    def fits(self) -> bool:
        return self.budget is None or self.fixed + self.edges + self.resident <= self.budget

    @property
    def overlaps(self) -> bool:
        """Loads and write-backs of a one-side bucket change fit beside the resident partitions."""
        return self.budget is None or self.fixed + self.edges + self.resident + self.in_flight <= self.budget

    def summary(self) -> dict[str, Any]:
        return {
            "memory_budget": self.budget,
            "num_partitions": dict(self.partitions),
            "partition_bytes": dict(self.partition_bytes),
            "unpartitioned_bytes": self.fixed,
            "resident_bytes": self.resident,
            "in_flight_bytes": self.in_flight,
            "chunk_edges": self.chunk_edges,
            "edge_chunk_bytes": self.edges,
            "overlap": self.overlaps,
            "buffer_slots": self.buffer_slots,
        }

    def refusal(self) -> str:
        """The one-line message for a budget that does not fit."""
        assert self.budget is not None
        parts = ", ".join(
            f"{name} {format_size(self.partition_bytes[name])} per partition (P={p})"
            for name, p in self.partitions.items()
            if p > 1
        )
        return (
            f"runtime.memory_budget: {format_size(self.budget)} cannot hold even the two partitions of a bucket"
            f" ({format_size(self.resident)}: {parts or 'no partitioned types'}; embeddings + optimizer state)"
            f" plus {format_size(self.fixed)} of unpartitioned tables and {format_size(self.edges)} of edge chunks;"
            " raise the budget, or use more partitions (num_partitions: auto, then re-import)"
        )


def _sides(cfg: Any) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = {t.name: set() for t in cfg.model.embeddings.tables}
    for rel in cfg.model.relations:
        sides[rel.lhs].add("lhs")
        sides[rel.rhs].add("rhs")
    return sides


def budget_of(cfg: Any) -> int | None:
    value = getattr(cfg.runtime, "memory_budget", None)
    return None if value is None else parse_size(value)


def plan(cfg: Any, counts: dict[str, int], partitions: dict[str, int]) -> MemoryPlan:
    """The plan of ``cfg`` for types of ``counts`` entities cut into ``partitions`` (no check: see ``fits``)."""
    budget = budget_of(cfg)
    tables = {t.name: t for t in cfg.model.embeddings.tables}
    sides = _sides(cfg)
    part_bytes: dict[str, int] = {}
    fixed = resident = 0
    side_bytes = {"lhs": 0, "rhs": 0}
    for name, table in tables.items():
        p = max(1, int(partitions[name]))
        size = -(-int(counts[name]) // p) * row_bytes(table)
        part_bytes[name] = size
        if p == 1:
            fixed += size
            continue
        resident += size * max(1, len(sides[name]))
        for side in sides[name]:
            side_bytes[side] += size
    chunk = int(cfg.training.max_edges_per_chunk)
    if budget is not None:
        chunk = min(chunk, max(MIN_CHUNK_EDGES, budget // EDGE_SHARE // EDGE_BYTES))
    in_flight = 2 * max(side_bytes.values())
    return MemoryPlan(budget, dict(partitions), part_bytes, fixed, resident, in_flight, chunk, chunk * EDGE_BYTES)


def choose_partitions(cfg: Any, counts: dict[str, int]) -> dict[str, int]:
    """num_partitions per type, ``auto`` resolved from the budget and the entity counts (called by the importer).

    ``auto`` types share the P of any explicitly partitioned type; otherwise the smallest P (1 when everything
    fits resident) whose plan fits with the in-flight partitions, small ``auto`` types staying unpartitioned
    when that fits.  Raises ConfigError (one line) when no P up to MAX_AUTO_PARTITIONS fits even without
    overlap, or when explicit partitions do not fit the budget."""
    tables = cfg.model.embeddings.tables
    explicit = {t.name: int(t.num_partitions) for t in tables if t.num_partitions != AUTO}
    auto = [t.name for t in tables if t.num_partitions == AUTO]
    budget = budget_of(cfg)
    if not auto:
        result = plan(cfg, counts, explicit)
        if not result.fits:
            raise ConfigError(result.refusal())
        return explicit
    if budget is None:
        raise ConfigError("model.embeddings.tables: num_partitions auto needs runtime.memory_budget (e.g. 8GiB)")
    shared = sorted({p for p in explicit.values() if p > 1})
    candidates = shared or [1, *range(2, MAX_AUTO_PARTITIONS + 1)]
    tables_by_name = {t.name: t for t in tables}
    fallback: MemoryPlan | None = None
    for p in candidates:
        small = {n for n in auto if counts[n] * row_bytes(tables_by_name[n]) * SMALL_SHARE <= budget}
        for keep_small in ((small,) if small else ()) + (set(),):
            parts = {**explicit, **{n: (1 if (p == 1 or n in keep_small) else p) for n in auto}}
            result = plan(cfg, counts, parts)
            if result.overlaps:
                return parts
            if result.fits and fallback is None:
                fallback = result
    if fallback is not None:  # fits only without overlap: still bounded, loads and write-backs wait
        return fallback.partitions
    last = {**explicit, **{n: candidates[-1] for n in auto}}
    raise ConfigError(plan(cfg, counts, last).refusal())


def check_budget(cfg: Any, counts: dict[str, int], partitions: dict[str, int]) -> MemoryPlan:
    """The plan of an imported graph's partitions under the config's budget; ConfigError when it does not fit."""
    result = plan(cfg, counts, partitions)
    if not result.fits:
        raise ConfigError(result.refusal())
    return result


def graph_plan(cfg: Any, graph: Any) -> MemoryPlan:
    """The plan of an imported graph under ``cfg``'s budget (ConfigError when the budget cannot hold it)."""
    types = graph.entity_types
    counts = {name: t.count for name, t in types.items()}
    return check_budget(cfg, counts, {name: t.num_partitions for name, t in types.items()})

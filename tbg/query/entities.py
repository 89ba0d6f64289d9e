"""Entity names <-> positions of one type (numpy/pyarrow, vectorised; no per-name Python).

A position is ``bounds[partition] + offset``, the row order of a type's checkpoint shards; dense ids are
the import's ids (names mode: index into the names dictionary; indices mode: the integer itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tbg.errors import QueryError
from tbg.graph import Graph


class EntityNames:
    """Lookups for one entity type of a graph, loaded on first use."""

    def __init__(self, graph: Graph, etype: str) -> None:
        self.graph = graph
        self.etype = etype
        self.count = graph.entity_types[etype].count
        self._names: np.ndarray | None = None
        self._arrow = None

    def _load(self) -> None:
        if self._names is None:
            import pyarrow as pa

            self._names = np.asarray(self.graph.names(self.etype), dtype=object)
            self._arrow = pa.array(self._names, type=pa.string())

    def positions(self, names: Sequence[str], where: str | Sequence[str] = "") -> np.ndarray:
        """Positions of ``names``; an unknown name is one QueryError naming it (and ``where``, e.g. a file row)."""
        if self.graph.id_mode == "names":
            import pyarrow as pa
            import pyarrow.compute as pc

            self._load()
            found = pc.index_in(pa.array(list(names), type=pa.string()), value_set=self._arrow)
            valid = found.is_valid().to_numpy(zero_copy_only=False)
            ids = found.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            ids = np.array([int(n) if str(n).lstrip("-").isdigit() else -1 for n in names], dtype=np.int64)
            valid = (ids >= 0) & (ids < self.count)
        if not valid.all():
            i = int(np.flatnonzero(~valid)[0])
            label = where if isinstance(where, str) else where[i]
            raise QueryError(f"{label + ': ' if label else ''}unknown {self.etype} {names[i]!r}")
        return self.graph.position(self.etype)[ids].astype(np.int64)

    def names(self, positions: np.ndarray) -> np.ndarray:
        """Names (object array) of positions; -1 gives None."""
        pos = np.asarray(positions, dtype=np.int64)
        ids = self.graph.perm(self.etype)[np.where(pos >= 0, pos, 0)]
        if self.graph.id_mode == "names":
            self._load()
            assert self._names is not None
            out = self._names[ids]
        else:
            out = ids.astype(str).astype(object)
        return np.where(pos >= 0, out, None)

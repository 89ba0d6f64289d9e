"""Entity names <-> dense ids and positions of one type (numpy/pyarrow, vectorised; no per-name Python).

The one name lookup: the query engine and :class:`tbg.trained_model.TrainedModel` both resolve names here.

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

    def ids(self, names: Sequence[str | int] | np.ndarray, where: str | Sequence[str] = "") -> np.ndarray:
        """Dense ids of ``names``; an unknown name is one QueryError naming it (and ``where``, e.g. a file row).

        A name is known when it is one of :meth:`Graph.names` (names mode: a dictionary entry; indices mode: an
        id written as ``str(id)``, so ``"05"`` or ``"+5"`` are unknown); an integer ``n`` stands for ``str(n)``.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        given = np.asarray(names)
        if self.graph.id_mode != "names" and given.dtype.kind in "iu":
            ids = given.astype(np.int64)
            valid = (ids >= 0) & (ids < self.count)
        else:
            text = pa.array(given if given.dtype.kind == "U" else given.astype(str), type=pa.string())
            if self.graph.id_mode == "names":
                self._load()
                found = pc.index_in(text, value_set=self._arrow)
            else:  # an id as str(id) writes it: ASCII digits, no sign, no leading zero
                canonical = pc.match_substring_regex(text, r"^(0|[1-9][0-9]{0,17})$")
                found = pc.cast(pc.if_else(canonical, text, None), pa.int64())
            valid = found.is_valid().to_numpy(zero_copy_only=False)
            ids = found.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            valid &= (ids >= 0) & (ids < self.count)
        if not valid.all():
            i = int(np.flatnonzero(~valid)[0])
            label = where if isinstance(where, str) else where[i]
            raise QueryError(f"{label + ': ' if label else ''}unknown {self.etype} {given[i].item()!r}")
        return ids

    def positions(self, names: Sequence[str | int] | np.ndarray, where: str | Sequence[str] = "") -> np.ndarray:
        """Shard-row positions of ``names`` (the lookup of :meth:`ids`)."""
        return self.graph.position(self.etype)[self.ids(names, where)].astype(np.int64)

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

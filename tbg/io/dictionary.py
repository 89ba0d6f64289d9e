"""Entity dictionary of one type (names mode): name -> dense id in order of first appearance, vectorised.

Each batch is dictionary-encoded (one hash pass in C), its distinct names are looked up in the names seen so
far with ``pyarrow.compute.index_in`` and the new ones appended.  No per-edge or per-name Python; the cost is
one hash of the dictionary per batch, so memory is the dictionary plus one batch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class EntityDictionary:
    """Dense ids 0..count-1 for the names of one entity type."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._values: pa.Array = pa.array([], pa.large_string())

    @classmethod
    def of(cls, name: str, values: pa.Array) -> EntityDictionary:
        """A dictionary that already holds ``values`` (names by dense id), e.g. a graph's before an append."""
        out = cls(name)
        out._values = values.cast(pa.large_string())
        return out

    @property
    def count(self) -> int:
        return len(self._values)

    @property
    def values(self) -> pa.Array:
        """Names by dense id."""
        return self._values

    def encode(self, names: pa.Array) -> np.ndarray:
        """Dense ids (int64) of ``names``, adding unseen names to the dictionary."""
        if len(names) == 0:
            return np.zeros(0, dtype=np.int64)
        encoded = pc.dictionary_encode(names.cast(pa.large_string()))
        distinct: pa.Array = encoded.dictionary
        codes = encoded.indices.to_numpy()
        ids = np.empty(len(distinct), dtype=np.int64)
        if self.count:
            found = pc.index_in(distinct, value_set=self._values)
            known = found.is_valid().to_numpy(zero_copy_only=False)
            ids[known] = found.drop_null().to_numpy()
        else:
            known = np.zeros(len(distinct), dtype=bool)
        new = ~known
        n_new = int(new.sum())
        if n_new:
            ids[new] = np.arange(self.count, self.count + n_new, dtype=np.int64)
            added = distinct.filter(pa.array(new)) if n_new < len(distinct) else distinct
            self._values = pa.concat_arrays([self._values, added])
        return ids[codes]

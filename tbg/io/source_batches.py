"""What a source read is made of: the file, how to read its columns, and the batches of a row window.

Both format readers (Parquet in ``sources``, TSV/CSV in ``text_source``) cut their record batches to the window
with :func:`window` and look their columns up with :func:`column_name`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from tbg.errors import InputError

DEFAULT_NAMES: dict[str, str | int | None] = {"lhs": "lhs", "rel": "rel", "rhs": "rhs"}
DEFAULT_POSITIONS: dict[str, str | int | None] = {"lhs": 0, "rel": 1, "rhs": 2}


@dataclass(frozen=True)
class SourceFile:
    """One resolved input file: its display URL, fs-internal path and byte size."""

    url: str
    path: str
    size: int


@dataclass(frozen=True)
class ReadSpec:
    """How to read edge columns.

    ``columns`` maps role -> column name or 0-based position (``rel``/``weight`` may be None).  The ``*_type``
    fields say how text columns are parsed: ``"int"`` (int64), ``"string"`` or, for weight, ``"float"``.
    """

    columns: dict[str, str | int | None] | None  # None: lhs/rel/rhs by name (Parquet, header) or 0/1/2
    format: str | None = None
    delimiter: str | None = None
    header: bool = False
    chunk_rows: int = 1 << 20
    id_type: str = "int"
    rel_type: str = "int"
    # roles whose column, when given by name, a file may lack (``rel`` with exactly one relation)
    optional: tuple[str, ...] = ()


@dataclass
class SourceBatch:
    """A slice of one file's edges; ``first_row`` is the 1-based row number of element 0."""

    file: SourceFile
    first_row: int
    columns: dict[str, pa.Array] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return len(self.columns["lhs"])

    def row(self, index: int) -> int:
        return self.first_row + index


def window(
    file: SourceFile,
    batches: Iterator[pa.RecordBatch],
    columns: dict[str, str],
    skip: int,
    remaining: int,
    first_row: int = 0,
) -> Iterator[tuple[SourceBatch | None, int]]:
    """(the part of each record batch inside the row window, rows consumed): the one place that cuts
    ``[skip, skip + remaining)`` (``remaining < 0``: to the end) out of a file's batches."""
    for rb in batches:
        n = rb.num_rows
        lo = min(skip, n)
        hi = n if remaining < 0 else min(n, lo + remaining)
        skip -= lo
        if hi > lo:
            part = rb.slice(lo, hi - lo) if (lo or hi < n) else rb
            yield SourceBatch(file, first_row + lo + 1, {r: part.column(c) for r, c in columns.items()}), n
            if remaining > 0:
                remaining -= hi - lo
        else:
            yield None, n
        first_row += n
        if remaining == 0:
            return


def listed(names: list[str]) -> str:
    """Column names for a one-line message: unprintable ones (a newline in a damaged schema) as repr."""
    return ", ".join(n if n.isprintable() else repr(n) for n in names)


def column_name(file: SourceFile, names: list[str], col: str | int) -> str:
    if isinstance(col, int):
        if col >= len(names):
            raise InputError(f"{file.url}: column position {col} out of range ({len(names)} columns: {listed(names)})")
        return names[col]
    if col not in names:
        raise InputError(f"{file.url}: column {col!r} not found (columns: {listed(names)})")
    return col


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

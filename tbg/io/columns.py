"""Arrow columns of a source batch -> validated numpy arrays, vectorised, with ``file row N`` errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tbg.errors import InputError
from tbg.io.sources import SourceBatch

_INT_RE = r"^\s*[+-]?[0-9]+\s*$"


def _fail(batch: SourceBatch, index: int, role: str, problem: str) -> InputError:
    return InputError(f"{batch.file.url} row {batch.row(index)}: column {role!r}: {problem}")


def _column(batch: SourceBatch, role: str) -> pa.Array:
    arr = batch.columns[role]
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise _fail(batch, first, role, "missing value")
    return arr


def _decode(arr: pa.Array) -> pa.Array:
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _strings_to_int(batch: SourceBatch, role: str, arr: pa.Array) -> np.ndarray:
    ok = pc.match_substring_regex(arr.cast(pa.string()), _INT_RE).to_numpy(zero_copy_only=False)
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        raise _fail(batch, first, role, f"not an integer: {arr[first].as_py()!r}")
    return pc.cast(pc.utf8_trim_whitespace(arr.cast(pa.string())), pa.int64()).to_numpy()


def _first_uncastable(arr: pa.Array, to: pa.DataType) -> int:
    """Index of the first value that does not cast (bisection: error path only, still vectorised)."""
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(arr.slice(lo, mid - lo), to)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return lo


def int_ids(batch: SourceBatch, role: str) -> np.ndarray:
    """Integer ids (indices mode): integer columns as-is, digit strings parsed; floats and negatives rejected."""
    arr = _decode(_column(batch, role))
    if pa.types.is_integer(arr.type):
        ids = arr.to_numpy()
    elif _is_text(arr.type):
        ids = _strings_to_int(batch, role, arr)
    else:
        raise InputError(f"{batch.file.url}: column {role!r} has type {arr.type}; id_mode indices needs integer ids")
    if ids.dtype != np.int64:
        if ids.dtype == np.uint64 and len(ids) and ids.max() >= 2**63:
            first = int(np.argmax(ids >= 2**63))
            raise _fail(batch, first, role, f"id {ids[first]} out of range")
        ids = ids.astype(np.int64)
    if len(ids) and ids.min() < 0:
        first = int(np.argmax(ids < 0))
        raise _fail(batch, first, role, f"negative id {ids[first]}")
    return ids


def string_ids(batch: SourceBatch, role: str) -> pa.Array:
    """Entity names (names mode): strings as-is (an empty one is an error), integers rendered as decimal strings."""
    arr = _column(batch, role)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type) or _is_text(arr.type):
        names = arr if pa.types.is_string(arr.type) else arr.cast(pa.string())
        _check_names(batch, role, names)
        return names
    raise InputError(f"{batch.file.url}: column {role!r} has type {arr.type}; expected entity names (strings)")


def _check_names(batch: SourceBatch, role: str, names: pa.Array) -> None:
    """Names must be non-empty (an empty cell is a broken row, not the entity ''), valid UTF-8 and without NUL
    characters (the graph dir stores them as HDF5 UTF-8 strings)."""
    empty = pc.equal(pc.binary_length(names), 0)
    if pc.any(empty).as_py():
        k = int(np.argmax(empty.fill_null(False).to_numpy(zero_copy_only=False)))
        raise InputError(f"{batch.file.url} row {batch.row(k)}: column {role!r}: empty entity name")
    try:
        names.validate(full=True)  # one C++ pass: UTF-8 validity of every value
    except pa.ArrowInvalid:
        raw = names.cast(pa.binary()).to_pylist()  # error path only: find the first bad row
        k = next(i for i, v in enumerate(raw) if v is not None and not _is_utf8(v))
        raise InputError(f"{batch.file.url} row {batch.row(k)}: column {role!r}: name is not valid UTF-8") from None
    has_nul = pc.match_substring(names, "\x00")
    if pc.any(has_nul).as_py():
        k = int(np.argmax(has_nul.fill_null(False).to_numpy(zero_copy_only=False)))
        raise InputError(f"{batch.file.url} row {batch.row(k)}: column {role!r}: name contains a NUL character")


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def relation_ids(batch: SourceBatch, names: list[str], relation_by: str) -> np.ndarray:
    """Relation index per edge: by position in model.relations, or by name (auto: by the column's type).

    Text columns are read as strings in ``auto`` mode: a value that is a relation name means that relation,
    otherwise a non-negative integer string means that index.
    """
    if "rel" not in batch.columns:
        return np.zeros(batch.num_rows, dtype=np.int32)
    arr = _column(batch, "rel")
    count = len(names)
    if pa.types.is_dictionary(arr.type):  # map the (small) dictionary, then take
        mapped = (
            relation_ids(SourceBatch(batch.file, batch.first_row, {"rel": arr.dictionary}), names, relation_by)
            if len(arr.dictionary)
            else np.zeros(0, np.int32)
        )
        return mapped[arr.indices.to_numpy()]
    if pa.types.is_integer(arr.type):
        if relation_by == "name":
            raise InputError(f"{batch.file.url}: column 'rel' holds integers but graph.relation_by is 'name'")
        rel = arr.to_numpy()
        bad = (rel < 0) | (rel >= count)
        if bad.any():
            first = int(np.argmax(bad))
            raise _fail(batch, first, "rel", f"unknown relation index {rel[first]} (model has {count} relations)")
        return rel.astype(np.int32)
    if not _is_text(arr.type):
        raise InputError(f"{batch.file.url}: column 'rel' has type {arr.type}; expected relation names or indices")
    arr = arr.cast(pa.string())
    if relation_by == "index":
        return relation_ids(
            SourceBatch(batch.file, batch.first_row, {"rel": pa.array(_strings_to_int(batch, "rel", arr))}),
            names,
            relation_by,
        )
    found = pc.index_in(arr, value_set=pa.array(names, pa.string()))
    out = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    missing = np.flatnonzero(out < 0)
    if len(missing):
        rest = arr.take(pa.array(missing))
        digits = pc.match_substring_regex(rest, r"^[0-9]+$").to_numpy(zero_copy_only=False)
        if relation_by == "auto" and digits.all():
            idx = pc.cast(rest, pa.int64()).to_numpy()
            bad = idx >= count
            if bad.any():
                first = int(missing[np.argmax(bad)])
                raise _fail(batch, first, "rel", f"unknown relation index {idx[np.argmax(bad)]} ({count} relations)")
            out[missing] = idx
        else:
            k = int(np.argmax(~digits)) if relation_by == "auto" else 0
            first = int(missing[k])
            raise _fail(batch, first, "rel", f"unknown relation {arr[first].as_py()!r} (relations: {', '.join(names)})")
    return out


def weights(batch: SourceBatch) -> np.ndarray:
    """float32 weights; NaN/inf, negatives and non-numbers are errors.

    A weight multiplies its edge's loss (0 leaves the edge out); a negative one would reward the model for
    scoring the edge low without bound, so training would diverge."""
    arr = _decode(_column(batch, "weight"))
    if _is_text(arr.type):
        try:
            arr = pc.cast(arr.cast(pa.string()), pa.float64())
        except pa.ArrowInvalid:
            first = _first_uncastable(arr.cast(pa.string()), pa.float64())
            raise _fail(batch, first, "weight", f"not a number: {arr[first].as_py()!r}") from None
    elif not (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type)):
        raise InputError(f"{batch.file.url}: column 'weight' has type {arr.type}; expected numbers")
    w = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~np.isfinite(w)
    if bad.any():
        first = int(np.argmax(bad))
        raise _fail(batch, first, "weight", f"weight {w[first]} is not finite")
    if (w < 0).any():
        first = int(np.argmax(w < 0))
        raise _fail(batch, first, "weight", f"weight {w[first]} is negative (a weight scales the edge's loss)")
    return w.astype(np.float32)

"""Fuzzing the source readers through `tbg import` (hypothesis): random bytes, random rows, random Parquet
schemas.  Every input either imports correctly (counts equal an independent count of the input) or fails
with one ``tbg import: error:`` line naming the file, exit 2, no traceback."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzz_helpers import (
    FUZZ,
    FUZZ_RELATIONS,
    assert_one_error_line,
    check_graph_consistent,
    entity_names,
    fuzz_config,
    import_with,
)
from hypothesis import assume, event, given
from hypothesis import strategies as st

REL_OF = {"fav": 0, "follow": 1, "0": 0, "1": 1}


def _outcome_ok(work: str, cfg: dict, source: str) -> tuple[int, str]:
    rc, err = import_with(work, cfg)
    if rc != 0:
        assert_one_error_line(rc, err, mentions=os.path.basename(source))
    return rc, err


def _imports_iff_valid(work: str, cfg: dict, source: str, valid: bool, shown: object) -> bool:
    """Import ``cfg``: valid input must import, invalid must be one error line naming ``source``."""
    rc, err = _outcome_ok(work, cfg, source)
    event("valid input" if valid else "invalid input")
    assert rc == (0 if valid else 2), f"valid input refused: {err}" if valid else f"invalid input imported: {shown}"
    return valid


# ------------------------------------------------------------------------------------------ random bytes

LINEISH = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b"u1\tfav\tt1", b"u2\tfollow\tu3", b"a,0,b", b"\t\t", b"x\t2\ty", b"\xff\tfav\tt", b""]),
    ),
    max_size=8,
).map(lambda parts: b"\n".join(parts))


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), LINEISH), ext=st.sampled_from(["tsv", "csv", "parquet"]))
def test_random_bytes_import_or_one_line(data: bytes, ext: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, f"train.{ext}")
        with open(source, "wb") as fh:
            fh.write(data)
        rc, _ = _outcome_ok(work, fuzz_config(os.path.join(work, "g"), source), source)
        event(f"exit {rc}")
        if rc == 0:
            m = check_graph_consistent(os.path.join(work, "g"))
            if ext == "tsv":  # every non-blank line must have become an edge
                lines = [x for x in re.split(rb"\r\n|\r|\n", data) if x]
                assert m["splits"]["train"]["num_edges"] == len(lines)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4))
def test_damaged_parquet_import_or_one_line(flips: list[tuple[float, int]]) -> None:
    """A valid Parquet file with a few bytes overwritten: a clear error, or an import that is consistent."""
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, "train.parquet")
        pq.write_table(pa.table({"lhs": [f"u{i}" for i in range(30)], "rel": ["fav", "follow"] * 15,
                                 "rhs": [f"t{i % 7}" for i in range(30)]}), source)  # fmt: skip
        raw = bytearray(open(source, "rb").read())
        for where, value in flips:
            raw[int(where * len(raw))] = value
        with open(source, "wb") as fh:
            fh.write(bytes(raw))
        rc, _ = _outcome_ok(work, fuzz_config(os.path.join(work, "g"), source), source)
        if rc == 0:
            check_graph_consistent(os.path.join(work, "g"))


# ------------------------------------------------------------------------------------------- random rows

NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\r\x00"), min_size=1, max_size=6)
REL = st.one_of(st.sampled_from(["fav", "follow", "0", "1"]), st.sampled_from(["2", "-1", "Fav", " fav", "x", ""]))
GOOD_WEIGHT = st.one_of(st.integers(0, 1000).map(str), st.floats(0, 1e6, allow_nan=False).map(repr))
BAD_WEIGHT = st.sampled_from(["nan", "NaN", "inf", "-inf", "", "abc", "1,5", "--1"])
ROW = st.tuples(NAME, REL, NAME, st.one_of(GOOD_WEIGHT, GOOD_WEIGHT, BAD_WEIGHT))
SAFE_NAME = NAME.filter(lambda x: not any(c in x for c in ",;|"))
GOOD_ROW = st.tuples(SAFE_NAME, st.sampled_from(["fav", "follow", "0", "1"]), SAFE_NAME, GOOD_WEIGHT)
ROWS = st.one_of(st.lists(GOOD_ROW, min_size=1, max_size=12), st.lists(ROW, min_size=1, max_size=12))


def _row_valid(row: tuple[str, str, str, str], weighted: bool, delimiter: str, fmt: str) -> bool:
    lhs, rel, rhs, w = row
    if rel not in REL_OF:
        return False
    if weighted and w not in GOOD_WEIGHT_SET and not _good_weight(w):
        return False
    if fmt == "tsv" and any(delimiter in x for x in (lhs, rel, rhs, w if weighted else "")):
        return False
    return True


GOOD_WEIGHT_SET: set[str] = set()


def _good_weight(w: str) -> bool:
    try:
        return math.isfinite(float(w)) and float(w) >= 0 and w.strip() == w and "_" not in w
    except ValueError:
        return False


def _write_text(path: str, rows, order, fmt, delimiter, header, weighted, crlf) -> None:
    roles = ["lhs", "rel", "rhs", "weight"][: 4 if weighted else 3]
    buf = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n")
        if header:
            writer.writerow([roles[i] for i in order])
        for row in rows:
            writer.writerow([row[i] for i in order])
    else:
        end = "\r\n" if crlf else "\n"
        lines = ([delimiter.join(roles[i] for i in order)] if header else []) + [
            delimiter.join(row[i] for i in order) for row in rows
        ]
        buf.write(end.join(lines) + end)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())


@FUZZ
@given(
    rows=ROWS,
    fmt=st.sampled_from(["tsv", "csv"]),
    delimiter=st.sampled_from(["\t", ",", ";", "|"]),
    header=st.booleans(),
    weighted=st.booleans(),
    crlf=st.booleans(),
    order=st.permutations([0, 1, 2, 3]),
)
def test_random_rows_import_exactly_the_valid_input(rows, fmt, delimiter, header, weighted, crlf, order) -> None:
    assume(fmt == "csv" or not any("\n" in x for row in rows for x in row))  # TSV has no quoting
    order = [i for i in order if weighted or i != 3]
    roles = ["lhs", "rel", "rhs", "weight"]
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, f"train.{fmt}")
        _write_text(source, rows, order, fmt, delimiter, header, weighted, crlf)
        columns = {roles[i]: (roles[i] if header else pos) for pos, i in enumerate(order)}
        graph = {"format": fmt, "delimiter": delimiter, "header": header, "columns": columns}
        cfg = fuzz_config(os.path.join(work, "g"), source, graph=graph)
        valid = all(_row_valid(r, weighted, delimiter, fmt) for r in rows)
        if not _imports_iff_valid(work, cfg, source, valid, rows):
            return
        _check_counts(os.path.join(work, "g"), [(a, REL_OF[r], b) for a, r, b, _w in rows])


def _check_counts(graph_dir: str, edges: list[tuple[str, int, str]]) -> None:
    m = check_graph_consistent(graph_dir)
    per_rel = Counter(r for _a, r, _b in edges)
    assert m["splits"]["train"]["num_edges"] == len(edges)
    assert m["splits"]["train"]["per_relation"] == [per_rel[i] for i in range(len(FUZZ_RELATIONS))]
    names: dict[str, set[str]] = {"user": set(), "tweet": set()}
    for a, r, b in edges:
        names[FUZZ_RELATIONS[r][1]].add(a)
        names[FUZZ_RELATIONS[r][2]].add(b)
    for etype, expected in names.items():
        assert m["entity_types"][etype]["count"] == len(expected)
        assert set(entity_names(graph_dir, etype)) == expected


# ---------------------------------------------------------------------------------- random Parquet schemas

INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


@st.composite
def id_column(draw, n: int, mode: str, clean: bool):
    """(arrow array, python values or None where the row is invalid); ``clean``: valid ids only."""
    kinds = ["int", "string", "dict"] + ([] if clean else ["int", "float", "bool"])
    kind = draw(st.sampled_from(kinds))
    null_at = draw(st.sets(st.integers(0, n - 1), max_size=1)) if not clean and draw(st.booleans()) else set()
    if kind in ("int",):
        typ = draw(st.sampled_from(INT_TYPES))
        hi = min(60, 2 ** (typ.bit_width - (1 if pa.types.is_signed_integer(typ) else 0)) - 1)
        lo = -3 if pa.types.is_signed_integer(typ) and not clean else 0
        hi = min(hi, 49) if clean else hi
        vals = draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
        arr = pa.array([None if i in null_at else v for i, v in enumerate(vals)], typ)
        ok = [None if i in null_at or (mode == "indices" and not 0 <= v < 50) else str(v) for i, v in enumerate(vals)]
        return arr, ok
    if kind in ("string", "dict"):
        ids = st.integers(0, 49 if clean else 60).map(str)
        vals = draw(st.lists(ids if clean and mode == "indices" else st.one_of(ids, NAME), min_size=n, max_size=n))
        arr = pa.array([None if i in null_at else v for i, v in enumerate(vals)], pa.string())
        if kind == "dict":
            arr = arr.dictionary_encode()

        def valid(v: str) -> bool:
            return mode == "names" or (re.fullmatch(r"\s*\+?[0-9]+\s*", v) is not None and int(v) < 50)

        ok = [None if i in null_at or not valid(v) else (str(int(v)) if mode == "indices" else v)
              for i, v in enumerate(vals)]  # fmt: skip
        return arr, ok
    vals = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    typ = pa.float64() if kind == "float" else pa.bool_()
    arr = pa.array([v if kind == "float" else bool(v % 2) for v in vals], typ)
    return arr, [None] * n  # floats and booleans are never ids


@st.composite
def rel_column(draw, n: int, clean: bool):
    kind = draw(st.sampled_from(["int", "string", "dict"]))
    if kind == "int":
        vals = draw(st.lists(st.integers(0, 1) if clean else st.integers(-1, 2), min_size=n, max_size=n))
        typ = draw(st.sampled_from([pa.int8(), pa.int32(), pa.int64()]))
        return pa.array(vals, typ), [v if 0 <= v < 2 else None for v in vals]
    names = ["fav", "follow", "0", "1"] + ([] if clean else ["2", "x"])
    vals = draw(st.lists(st.sampled_from(names), min_size=n, max_size=n))
    arr = pa.array(vals, pa.string())
    return (arr.dictionary_encode() if kind == "dict" else arr), [REL_OF.get(v) for v in vals]


@FUZZ
@given(data=st.data(), mode=st.sampled_from(["names", "indices"]), n=st.integers(1, 8), weighted=st.booleans())
def test_random_parquet_schemas(data, mode: str, n: int, weighted: bool) -> None:
    clean = data.draw(st.booleans())
    lhs, lhs_ok = data.draw(id_column(n, mode, clean))
    rhs, rhs_ok = data.draw(id_column(n, mode, clean))
    rel, rel_ok = data.draw(rel_column(n, clean))
    cols = {"lhs": lhs, "rel": rel, "rhs": rhs}
    w_ok = [True] * n
    if weighted:
        w = st.floats(0, 10, allow_nan=False)
        ws = data.draw(st.lists(w if clean else st.one_of(w, st.just(math.nan)), min_size=n, max_size=n))
        cols["weight"] = pa.array(ws, data.draw(st.sampled_from([pa.float32(), pa.float64()])))
        w_ok = [math.isfinite(w) for w in ws]
    if mode == "names":
        assume(all(v is None or v != "" for v in lhs_ok + rhs_ok))  # empty names: an error (test_bad_inputs)
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, "train.parquet")
        pq.write_table(pa.table(cols), source)
        graph = {"columns": {"lhs": "lhs", "rel": "rel", "rhs": "rhs", **({"weight": "weight"} if weighted else {})}}
        cfg = fuzz_config(os.path.join(work, "g"), source, mode=mode, graph=graph)
        rows = list(zip(lhs_ok, rel_ok, rhs_ok, w_ok))
        valid = all(a is not None and r is not None and b is not None and w for a, r, b, w in rows)
        if not _imports_iff_valid(work, cfg, source, valid, cols):
            return
        if mode == "names":
            _check_counts(os.path.join(work, "g"), [(a, r, b) for a, r, b, _w in rows])
        else:
            m = check_graph_consistent(os.path.join(work, "g"))
            assert m["splits"]["train"]["num_edges"] == n


# ------------------------------------------------------------------------- known gaps (issue 10 item 6)


@pytest.mark.parametrize("row", [("", "fav", "t1", "1"), ("u1", "fav", "", "1"), ("u1", "fav", "t1", "-0.5")])
def test_empty_names_and_negative_weights_are_one_line_errors(row) -> None:
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, "train.tsv")
        _write_text(source, [("u2", "follow", "u3", "1"), row], [0, 1, 2, 3], "tsv", "\t", False, True, False)
        graph = {"columns": {"lhs": 0, "rel": 1, "rhs": 2, "weight": 3}}
        rc, err = import_with(work, fuzz_config(os.path.join(work, "g"), source, graph=graph))
        assert_one_error_line(rc, err, mentions="train.tsv row 2")


# ------------------------------------------------------------------ regressions the fuzzing found (fixed)


def _parquet_bytes(cols: dict) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(cols), sink, store_schema=False)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(
    "case", ["non_utf8_column_name", "newline_in_column_name", "non_utf8_string_data", "non_utf8_rel_data"]
)
def test_damaged_parquet_strings_are_one_clear_line(case: str) -> None:
    bad = pa.array([b"u\x80"], pa.binary()).view(pa.string())  # string data that is not UTF-8
    cols = {"lhs": pa.array(["u1"]), "rel": pa.array(["fav"]), "rhs": pa.array(["t1"])}
    if case == "newline_in_column_name":
        cols["r\nhs"] = cols.pop("rhs")
    elif case == "non_utf8_string_data":
        cols["lhs"] = bad
    elif case == "non_utf8_rel_data":
        cols["rel"] = bad
    raw = _parquet_bytes(cols)
    if case == "non_utf8_column_name":  # the footer's column name, byte-patched (pyarrow will not write it)
        raw = raw.replace(b"rhs", b"\x80hs")
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, "train.parquet")
        with open(source, "wb") as fh:
            fh.write(raw)
        rc, err = import_with(work, fuzz_config(os.path.join(work, "g"), source))
        assert_one_error_line(rc, err, mentions="train.parquet")

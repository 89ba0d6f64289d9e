"""TSV/CSV source files: parsed by Arrow one block at a time, parse errors turned into ``file row N: problem``."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
from fsspec.implementations.local import LocalFileSystem

from tbg.errors import InputError
from tbg.io.source_batches import (
    DEFAULT_NAMES,
    DEFAULT_POSITIONS,
    ReadSpec,
    SourceBatch,
    SourceFile,
    column_name,
    first_line,
    window,
)

_ROW_RE = re.compile(r"Row #(\d+): ?")
_COLUMN_RE = re.compile(r"In CSV column #(\d+): ?")


def text_batches(
    fs: fsspec.AbstractFileSystem,
    file: SourceFile,
    fmt: str,
    compression: str | None,
    spec: ReadSpec,
    skip: int,
    remaining: int,
) -> Iterator[tuple[SourceBatch | None, int]]:
    delimiter = spec.delimiter or ("\t" if fmt == "tsv" else ",")
    header = _read_header(fs, file, compression, delimiter) if spec.header else None
    names = header if header is not None else None
    columns: dict[str, str] = {}
    wanted = spec.columns or (DEFAULT_NAMES if spec.header else DEFAULT_POSITIONS)
    for role, col in wanted.items():
        if col is None or (role in spec.optional and isinstance(col, str) and (names is None or col not in names)):
            continue
        if names is None:
            if isinstance(col, str):
                raise InputError(f"{file.url}: column {col!r} given by name but graph.header is false; use positions")
            columns[role] = f"f{col}"
        else:
            columns[role] = column_name(file, names, col)
    kinds = {"lhs": spec.id_type, "rhs": spec.id_type, "rel": spec.rel_type, "weight": "float"}
    types = {"int": pa.int64(), "string": pa.string(), "float": pa.float64()}
    column_types = {name: types[kinds[role]] for role, name in columns.items()}
    block = int(min(64 << 20, max(1 << 20, spec.chunk_rows * 8)))
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char=False if fmt == "tsv" else '"')
    convert = pacsv.ConvertOptions(
        column_types=column_types,
        include_columns=list(dict.fromkeys(columns.values())),
        null_values=[],  # "nan"/"NULL" are values (NaN weights are then rejected), never silent nulls
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )

    def read_options(threads: bool, block_size: int, at_start: bool = True) -> pacsv.ReadOptions:
        """Arrow's read options; the header line is skipped only where the file starts (``at_start``)."""
        ro = pacsv.ReadOptions(
            use_threads=threads,
            block_size=block_size,
            skip_rows=1 if (spec.header and at_start) else 0,
            autogenerate_column_names=names is None,
        )
        if names is not None:
            ro.column_names = names
        return ro

    def open_reader(threads: bool) -> pacsv.CSVStreamingReader:
        stream = _open_text(fs, file, compression)
        ro = read_options(threads, block)
        return pacsv.open_csv(stream, read_options=ro, parse_options=parse, convert_options=convert)

    def line_blocks() -> Iterator[pa.RecordBatch]:
        """TSV parsed one block of whole lines at a time.

        Arrow's streaming reader reads up to 32 blocks ahead of its consumer, so import memory grew with the
        size of each source file; here one block of text and its columns are held.  Quoted CSV keeps the
        streaming reader: its quoted fields may contain newlines.
        """
        stream = _open_text(fs, file, compression)
        carry, first = b"", True
        try:
            while True:
                data = stream.read(block)
                buf = carry + data if carry else data
                if not buf:
                    return
                cut = buf.rfind(b"\n") + 1 if data else len(buf)
                if cut == 0:  # no complete line yet
                    carry = buf
                    continue
                text, carry = buf[:cut], buf[cut:]
                if not text.strip(b"\r\n"):  # only blank lines: no rows (Arrow cannot parse an empty block)
                    continue
                ro = read_options(True, max(1 << 20, len(text) // 4 + 1), at_start=first)
                first = False
                table = pacsv.read_csv(
                    pa.py_buffer(text), read_options=ro, parse_options=parse, convert_options=convert
                )
                yield from table.combine_chunks().to_batches()
        finally:
            stream.close()

    try:
        reader = line_blocks() if fmt == "tsv" else open_reader(True)
        yield from window(file, reader, columns, skip, remaining)
    except pa.ArrowKeyError:
        have = _count_columns(fs, file, compression, delimiter, quoted=fmt == "csv")
        missing = [r for r, c in columns.items() if names is None and int(c[1:]) >= have]
        where = ", ".join(f"{r!r} at position {columns[r][1:]}" for r in missing) or "not found"
        raise InputError(f"{file.url}: column {where} out of range (the file has {have} columns)") from None
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc) and _blank(fs, file, compression):
            return  # a file of blank lines has no rows, like an empty one
        raise _text_error(file, exc, columns, names, spec.header, lambda: open_reader(False)) from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{file.url}: cannot read: {first_line(exc)}") from None


def _open_text(fs: fsspec.AbstractFileSystem, file: SourceFile, compression: str | None) -> Any:
    if isinstance(fs, LocalFileSystem):
        stream = pa.OSFile(file.path, "rb")
    else:
        stream = pa.PythonFile(fs.open(file.path, "rb"), mode="r")
    return pa.CompressedInputStream(stream, compression) if compression else stream


def _blank(fs: fsspec.AbstractFileSystem, file: SourceFile, compression: str | None) -> bool:
    """The file holds nothing but line breaks."""
    with fs.open(file.path, "rb", compression=compression) as fh:
        while data := fh.read(1 << 20):
            if data.strip(b"\r\n"):
                return False
    return True


def _count_columns(
    fs: fsspec.AbstractFileSystem, file: SourceFile, compression: str | None, delimiter: str, quoted: bool
) -> int:
    """Fields of the first non-blank line (what Arrow infers the column count from; error path only)."""
    with fs.open(file.path, "rb", compression=compression) as fh:
        head = fh.read(1 << 20).decode("utf-8", errors="replace")
    line = next((x for x in head.splitlines() if x), "")
    try:
        quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
        return len(next(csv.reader([line], delimiter=delimiter, quoting=quoting), []))
    except csv.Error:
        return line.count(delimiter) + 1


def _read_header(fs: fsspec.AbstractFileSystem, file: SourceFile, compression: str | None, delimiter: str) -> list[str]:
    with fs.open(file.path, "rb", compression=compression) as fh:
        line = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    if not line:
        raise InputError(f"{file.url}: graph.header is true but the file is empty")
    return next(csv.reader(io.StringIO(line), delimiter=delimiter))


def _text_error(
    file: SourceFile,
    exc: Exception,
    columns: dict[str, str],
    names: list[str] | None,
    header: bool,
    reopen: Any,
) -> InputError:
    """Turn pyarrow's parse/convert error into ``file row N: problem``; re-read serially to learn N."""
    message = first_line(exc)
    if "Row #" not in message:
        try:
            for _ in reopen():
                pass
        except pa.ArrowInvalid as serial:
            message = first_line(serial)
        except Exception:  # noqa: BLE001 - keep the original message
            pass
    row_match = _ROW_RE.search(message)
    where = ""
    if row_match:
        row = int(row_match.group(1)) - (1 if header else 0)
        where = f" row {row}"
        message = message[: row_match.start()] + message[row_match.end() :]
    col_match = _COLUMN_RE.search(message)
    if col_match:
        pos = int(col_match.group(1))
        col = names[pos] if names is not None and pos < len(names) else f"f{pos}"
        role = next((r for r, c in columns.items() if c == col), None)
        label = f"column {role!r} ({col if names else f'position {pos}'})" if role else f"column {col}"
        message = message[: col_match.start()] + message[col_match.end() :]
        message = f"{label}: {message}"
    message = message.replace("CSV parse error: ", "").replace("CSV conversion error to ", "cannot parse as ")
    expected = re.match(r"Expected (\d+) columns, got (\d+)(: .*)?", message)
    if expected:
        message = f"expected {expected.group(1)} columns, got {expected.group(2)}{expected.group(3) or ''}"
    return InputError(f"{file.url}{where}: {message}")

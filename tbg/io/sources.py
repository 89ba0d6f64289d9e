"""Source edge files: resolve any fsspec URL/glob, stream record batches of a global row window.

Rows are numbered 1-based per file, counting data records only (a header line and blank lines are not
rows), so ``row N`` in an error is the N-th edge of that file.  ``offset``/``limit`` select a window of
the concatenation of all files in sorted path order; whole Parquet files and row groups outside the window
are skipped using their metadata, text files are parsed only as far as the window reaches.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tbg.errors import InputError

ROLES = ("lhs", "rel", "rhs", "weight")
_TEXT_EXT = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv"}
_PARQUET_EXT = {".parquet", ".pq"}
_DEFAULT_NAMES: dict[str, str | int | None] = {"lhs": "lhs", "rel": "rel", "rhs": "rhs"}
_DEFAULT_POSITIONS: dict[str, str | int | None] = {"lhs": 0, "rel": 1, "rhs": 2}
_ROW_RE = re.compile(r"Row #(\d+): ?")
_COLUMN_RE = re.compile(r"In CSV column #(\d+): ?")


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


def resolve(data_root: str) -> tuple[fsspec.AbstractFileSystem, list[SourceFile]]:
    """Expand a URL, glob or directory into its files, sorted by path (the row order limit/offset refer to)."""
    try:
        fs, path = fsspec.core.url_to_fs(data_root)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{data_root}: cannot open this location: {exc}") from None
    try:
        if any(ch in path for ch in "*?["):
            paths = [p for p in fs.glob(path) if not fs.isdir(p)]
            if not paths:
                raise InputError(f"{data_root}: no files match this pattern")
        elif fs.isdir(path):
            paths = [p for p in fs.find(path) if not p.rsplit("/", 1)[-1].startswith((".", "_"))]
            if not paths:
                raise InputError(f"{data_root}: directory has no files")
        elif fs.exists(path):
            paths = [path]
        else:
            raise InputError(f"{data_root}: file not found")
        infos = [(p, int(fs.size(p) or 0)) for p in sorted(paths)]
    except (OSError, PermissionError) as exc:
        raise InputError(f"{data_root}: cannot list source files: {exc}") from None
    return fs, [SourceFile(_display(fs, p), p, size) for p, size in infos]


def _display(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def file_format(file: SourceFile, configured: str | None) -> tuple[str, str | None]:
    """(format, compression) from the config, else from the extension (``.gz`` allowed for text)."""
    name = file.path.lower()
    compression = "gzip" if name.endswith(".gz") else None
    base = name[:-3] if compression else name
    if configured is not None:
        return configured, compression
    ext = "." + base.rsplit(".", 1)[-1] if "." in base.rsplit("/", 1)[-1] else ""
    if ext in _PARQUET_EXT and not compression:
        return "parquet", None
    if ext in _TEXT_EXT:
        return _TEXT_EXT[ext], compression
    if compression:
        raise InputError(f"{file.url}: cannot tell the format of this .gz file; set graph.format (tsv or csv)")
    return "parquet", None  # TwHIN's edge files (e.g. part-00000) are Parquet without an extension


class SourceReader:
    """Iterates record batches of the files' row window, keeping per-file row counts for the manifest."""

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        files: list[SourceFile],
        spec: ReadSpec,
        offset: int = 0,
        limit: int | None = None,
    ) -> None:
        self.fs, self.files, self.spec = fs, files, spec
        self.offset, self.limit = offset, limit
        self.rows_taken: dict[str, int] = {}

    def __iter__(self) -> Iterator[SourceBatch]:
        skip = self.offset
        remaining = self.limit if self.limit is not None else -1
        for file in self.files:
            if remaining == 0:
                break
            fmt, compression = file_format(file, self.spec.format)
            if fmt == "parquet":
                reader = _ParquetFileReader(self.fs, file, self.spec)
                total = reader.num_rows
                if skip >= total:  # whole file before the window: metadata only
                    skip -= total
                    reader.close()
                    continue
                batches = reader.batches(skip, remaining)
            else:
                batches = _text_batches(self.fs, file, fmt, compression, self.spec, skip, remaining)
            taken = 0
            for batch, consumed in batches:
                skip = max(0, skip - consumed)
                if batch is None:
                    continue
                taken += batch.num_rows
                if remaining > 0:
                    remaining -= batch.num_rows
                yield batch
            self.rows_taken[file.url] = taken
            skip = max(0, skip)


# ----------------------------------------------------------------------------- parquet


# what a damaged Parquet file raises (non-UTF-8 bytes in its schema's names give UnicodeDecodeError)
_PARQUET_ERRORS = (pa.ArrowException, OSError, UnicodeDecodeError)


def _open_parquet(fs: fsspec.AbstractFileSystem, file: SourceFile) -> pq.ParquetFile:
    try:
        source: Any = file.path if isinstance(fs, LocalFileSystem) else fs.open(file.path, "rb")
        pf = pq.ParquetFile(source)
        pf.schema_arrow  # noqa: B018 - decode the schema here, where a damaged one is reported
        return pf
    except _PARQUET_ERRORS as exc:
        raise InputError(f"{file.url}: not a readable Parquet file: {_first_line(exc)}") from None


class _ParquetFileReader:
    def __init__(self, fs: fsspec.AbstractFileSystem, file: SourceFile, spec: ReadSpec) -> None:
        self.file, self.spec = file, spec
        self.pf = _open_parquet(fs, file)
        self.num_rows = self.pf.metadata.num_rows
        names = self.pf.schema_arrow.names
        wanted = spec.columns or _DEFAULT_NAMES
        self.columns = {
            role: _column_name(file, names, col)
            for role, col in wanted.items()
            if col is not None and not (role in spec.optional and isinstance(col, str) and col not in names)
        }

    def close(self) -> None:
        self.pf.close()

    def batches(self, skip: int, remaining: int) -> Iterator[tuple[SourceBatch | None, int]]:
        """Yield (batch, rows consumed from the file including skipped ones)."""
        md = self.pf.metadata
        sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        groups, first_row, start = [], 0, 0
        for g, n in enumerate(sizes):  # only row groups that overlap the window are read
            if start + n <= skip and not groups:
                first_row += n
            elif remaining < 0 or start < skip + remaining:
                groups.append(g)
            start += n
        yield None, first_row
        skip -= first_row
        wanted = list(dict.fromkeys(self.columns.values()))
        try:
            it = self.pf.iter_batches(batch_size=self.spec.chunk_rows, row_groups=groups, columns=wanted)
            it = (_checked(rb) for rb in it)
            for item, n in _window(self.file, it, self.columns, skip, remaining, first_row):
                yield item, n
                first_row += n
        except _PARQUET_ERRORS as exc:
            raise InputError(
                f"{self.file.url}: not a readable Parquet file: near row {first_row + 1}: {_first_line(exc)}"
            ) from None
        finally:
            self.close()


def _checked(rb: pa.RecordBatch) -> pa.RecordBatch:
    """Parquet readers do not check that string data is valid UTF-8: a damaged page fails here (one clear
    line) instead of in a later cast or error message."""
    rb.validate(full=True)
    return rb


def _window(
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


def _listed(names: list[str]) -> str:
    """Column names for a one-line message: unprintable ones (a newline in a damaged schema) as repr."""
    return ", ".join(n if n.isprintable() else repr(n) for n in names)


def _column_name(file: SourceFile, names: list[str], col: str | int) -> str:
    if isinstance(col, int):
        if col >= len(names):
            raise InputError(f"{file.url}: column position {col} out of range ({len(names)} columns: {_listed(names)})")
        return names[col]
    if col not in names:
        raise InputError(f"{file.url}: column {col!r} not found (columns: {_listed(names)})")
    return col


# ----------------------------------------------------------------------------- text


def _text_batches(
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
    wanted = spec.columns or (_DEFAULT_NAMES if spec.header else _DEFAULT_POSITIONS)
    for role, col in wanted.items():
        if col is None or (role in spec.optional and isinstance(col, str) and (names is None or col not in names)):
            continue
        if names is None:
            if isinstance(col, str):
                raise InputError(f"{file.url}: column {col!r} given by name but graph.header is false; use positions")
            columns[role] = f"f{col}"
        else:
            columns[role] = _column_name(file, names, col)
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
        yield from _window(file, reader, columns, skip, remaining)
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
        raise InputError(f"{file.url}: cannot read: {_first_line(exc)}") from None


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
    message = _first_line(exc)
    if "Row #" not in message:
        try:
            for _ in reopen():
                pass
        except pa.ArrowInvalid as serial:
            message = _first_line(serial)
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

"""Source edge files: resolve any fsspec URL/glob, stream record batches of a global row window.

Rows are numbered 1-based per file, counting data records only (a header line and blank lines are not
rows), so ``row N`` in an error is the N-th edge of that file.  ``offset``/``limit`` select a window of
the concatenation of all files in sorted path order; whole Parquet files and row groups outside the window
are skipped using their metadata, text files are parsed only as far as the window reaches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tbg.errors import InputError
from tbg.io.source_batches import DEFAULT_NAMES, ReadSpec, SourceBatch, SourceFile, column_name, first_line, window
from tbg.io.text_source import text_batches

__all__ = ["ReadSpec", "SourceBatch", "SourceFile", "SourceReader", "file_format", "resolve"]

_TEXT_EXT = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv"}
_PARQUET_EXT = {".parquet", ".pq"}


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
                batches = text_batches(self.fs, file, fmt, compression, self.spec, skip, remaining)
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


def _open_parquet(fs: fsspec.AbstractFileSystem, file: SourceFile) -> tuple[pq.ParquetFile, Any]:
    """(the Parquet file, the fsspec handle to close after it, or None for a local path)."""
    handle: Any = None
    try:
        if not isinstance(fs, LocalFileSystem):
            handle = fs.open(file.path, "rb")
        pf = pq.ParquetFile(file.path if handle is None else handle)
        pf.schema_arrow  # noqa: B018 - decode the schema here, where a damaged one is reported
        return pf, handle
    except _PARQUET_ERRORS as exc:
        if handle is not None:
            handle.close()
        raise InputError(f"{file.url}: not a readable Parquet file: {first_line(exc)}") from None


class _ParquetFileReader:
    def __init__(self, fs: fsspec.AbstractFileSystem, file: SourceFile, spec: ReadSpec) -> None:
        self.file, self.spec = file, spec
        self.pf, self._handle = _open_parquet(fs, file)
        try:
            self.num_rows = self.pf.metadata.num_rows
            names = self.pf.schema_arrow.names
            wanted = spec.columns or DEFAULT_NAMES
            self.columns = {
                role: column_name(file, names, col)
                for role, col in wanted.items()
                if col is not None and not (role in spec.optional and isinstance(col, str) and col not in names)
            }
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the file and, for a remote one, its handle (its read-ahead buffer goes with it)."""
        self.pf.close()
        if self._handle is not None:
            self._handle.close()
            self._handle = None

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
            for item, n in window(self.file, it, self.columns, skip, remaining, first_row):
                yield item, n
                first_row += n
        except _PARQUET_ERRORS as exc:
            raise InputError(
                f"{self.file.url}: not a readable Parquet file: near row {first_row + 1}: {first_line(exc)}"
            ) from None
        finally:
            self.close()


def _checked(rb: pa.RecordBatch) -> pa.RecordBatch:
    """Parquet readers do not check that string data is valid UTF-8: a damaged page fails here (one clear
    line) instead of in a later cast or error message."""
    rb.validate(full=True)
    return rb

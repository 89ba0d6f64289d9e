"""Source resolution and row windows: sorted files, Parquet row-group skipping, text, gzip, columns."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from builders import write_parquet, write_tsv

from tbg.errors import InputError
from tbg.io.sources import ReadSpec, SourceReader, file_format, resolve


def _rows(reader: SourceReader) -> tuple[list[int], list[int]]:
    lhs, first = [], []
    for b in reader:
        lhs += b.columns["lhs"].to_pylist()
        first.append(b.first_row)
    return lhs, first


def test_resolve_sorted_glob_and_dir(tmp_path: Path) -> None:
    for name in ("b.tsv", "a.tsv", "c.tsv", "_SUCCESS"):
        (tmp_path / name).write_text("1\t0\t2\n")
    _, files = resolve(str(tmp_path / "*.tsv"))
    assert [Path(f.path).name for f in files] == ["a.tsv", "b.tsv", "c.tsv"]
    _, files = resolve(str(tmp_path))
    assert [Path(f.path).name for f in files] == ["a.tsv", "b.tsv", "c.tsv"]
    with pytest.raises(InputError, match=r"\*\.parquet: no files match this pattern"):
        resolve(str(tmp_path / "*.parquet"))


@pytest.mark.parametrize(("offset", "limit"), [(0, None), (0, 7), (95, 30), (100, 100), (250, None), (299, 5)])
def test_parquet_window_across_files(tmp_path: Path, offset: int, limit: int | None) -> None:
    for k in range(3):  # 3 files x 100 rows, row groups of 16: skips whole files and row groups
        ids = np.arange(100 * k, 100 * (k + 1))
        write_parquet(tmp_path / f"p{k}.parquet", {"lhs": ids, "rel": ids * 0, "rhs": ids}, row_group_size=16)
    fs, files = resolve(str(tmp_path / "*.parquet"))
    spec = ReadSpec(columns=None, chunk_rows=10)
    reader = SourceReader(fs, files, spec, offset=offset, limit=limit)
    lhs, _ = _rows(reader)
    end = 300 if limit is None else min(300, offset + limit)
    assert lhs == list(range(offset, end))
    assert sum(reader.rows_taken.values()) == end - offset


@pytest.mark.parametrize("gz", [False, True])
def test_text_window_and_row_numbers(tmp_path: Path, gz: bool) -> None:
    for k in range(2):
        write_tsv(tmp_path / f"t{k}.tsv", [(100 * k + i, 0, i) for i in range(100)])
        if gz:
            data = (tmp_path / f"t{k}.tsv").read_bytes()
            (tmp_path / f"t{k}.tsv").unlink()
            (tmp_path / f"t{k}.tsv.gz").write_bytes(gzip.compress(data))
    fs, files = resolve(str(tmp_path / "t*"))
    assert file_format(files[0], None) == ("tsv", "gzip" if gz else None)
    reader = SourceReader(fs, files, ReadSpec(columns=None, chunk_rows=1), offset=90, limit=20)
    lhs, first = _rows(reader)
    assert lhs == list(range(90, 110))
    assert first[0] == 91  # 1-based row inside t0


def test_csv_header_columns_by_name_and_position(tmp_path: Path) -> None:
    write_tsv(tmp_path / "e.csv", [("x", "r", "y", 0.5)], header=["h", "rel", "t", "w"], delimiter=",")
    fs, files = resolve(str(tmp_path / "e.csv"))
    spec = ReadSpec(
        columns={"lhs": "h", "rel": 1, "rhs": "t", "weight": 3}, header=True, id_type="string", rel_type="string"
    )
    batch = next(iter(SourceReader(fs, files, spec)))
    assert batch.columns["lhs"].to_pylist() == ["x"] and batch.columns["weight"].to_pylist() == [0.5]
    with pytest.raises(InputError, match="given by name but graph.header is false"):
        list(SourceReader(fs, files, ReadSpec(columns={"lhs": "h", "rel": 1, "rhs": 2})))


def test_extensionless_files_are_parquet(tmp_path: Path) -> None:
    write_parquet(tmp_path / "part-00000", {"lhs": [1], "rel": [0], "rhs": [2]})
    fs, files = resolve(str(tmp_path / "part-*"))
    assert file_format(files[0], None) == ("parquet", None)
    assert _rows(SourceReader(fs, files, ReadSpec(columns=None)))[0] == [1]

"""`tbg export CONFIG --format tsv|parquet|npy --out DIR`: entity vectors and relation parameters.

Entities are written per type in dense-id order (the ids/names of the import), so row ``i`` of every format
is entity ``i``.  Output is built in a temp dir beside ``--out`` and renamed into place; an existing output
is replaced only with ``--overwrite``.  This module never imports torch (``import torch`` costs seconds):
relation parameters are read from the checkpoint's relations.h5 with h5py and sliced per relation here.

Formats (docs/export.md):
  tsv      <type>_embeddings.tsv  name<TAB>v1<TAB>…<TAB>vD (PBG's format, shortest round-trip float32 text)
           relation_parameters.tsv  relation<TAB>side<TAB>param<TAB>values… (row-major)
  parquet  <type>.parquet  name: string, type: string, vector: fixed_size_list<float32>[D]
           relation_parameters.parquet  relation, side, param, shape, values: list<float32>
  npy      <type>.npy float32 [count, D], <type>_names.txt (one name per line), relations.npz
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tbg.checkpoint import Checkpoint, resolve_checkpoint
from tbg.config import Config
from tbg.consistency import check_checkpoint, check_graph, check_shards, resolve_partitions
from tbg.errors import CheckpointError, ExportError, storage_errors
from tbg.export_blocks import NAME_BYTES, SHARE, block_rows, dense_blocks
from tbg.graph import Graph
from tbg.locking import exclusive, remove_path
from tbg.memory import budget_of
from tbg.model.operators import OPERATORS

FORMATS = ("tsv", "parquet", "npy")


@dataclass
class RelationParam:
    relation: str
    side: str  # "lhs" | "rhs": which embedding the operator transforms
    param: str
    values: np.ndarray  # float32, at the relation's own dim


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", required=True, help="output dir (created atomically)")
    parser.add_argument("--checkpoint", help="save_dir, checkpoints dir or version dir (default: latest)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dir")


def run(args: argparse.Namespace) -> int:
    from tbg.config import load_config

    cfg = load_config(args.config, args.overrides)
    t0 = time.perf_counter()
    summary = export(cfg, args.format, args.out, checkpoint=args.checkpoint, overwrite=args.overwrite)
    counts = ", ".join(f"{t}: {n} x {d}" for t, (n, d) in summary["entity_types"].items())
    print(
        f"exported {counts} ({args.format}) from {summary['checkpoint']} to {args.out}"
        f" in {time.perf_counter() - t0:.1f} s"
    )
    return 0


# ----------------------------------------------------------------------------- reading


def dense_embeddings(graph: Graph, ckpt: Checkpoint, etype: str, dim: int) -> np.ndarray:
    """All partitions of ``etype`` as float32 [count, dim], row i = dense id i (each shard scattered once)."""
    whole = block_rows(graph.entity_types[etype].count, dim, None)  # one block
    return next(dense_blocks(graph, ckpt, etype, dim, whole, ""))[1]


def relation_params(cfg: Config, ckpt: Checkpoint) -> list[RelationParam]:
    """Each relation's operator parameters at its own dim: the padded state-dict arrays sliced to the
    operator's :meth:`~tbg.model.operators.Operator.layout`."""
    arrays = ckpt.relations()
    sides = ("lhs", "rhs") if str(cfg.model.relation_sides) == "both" else ("rhs",)
    out = []
    for r, rel in enumerate(cfg.model.relations):
        layout = OPERATORS.resolve(rel.operator).layout(cfg.model.table(rel.lhs).embedding_dim)
        for side in sides:
            for name, shape in layout:
                key = f"{side}_operators.{name}"
                if key not in arrays:
                    raise CheckpointError(f"{ckpt.path}/relations.h5: missing {key!r} for relation {rel.name!r}")
                value = arrays[key][(r, *(slice(0, n) for n in shape))]
                out.append(RelationParam(rel.name, side, name, np.asarray(value, dtype=np.float32)))
    return out


# ----------------------------------------------------------------------------- writing


def _escape(names: np.ndarray):
    """Names as an Arrow string array, with TAB, newline, CR and backslash escaped only when present."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(names, type=pa.string())
    if pc.any(pc.match_substring_regex(arr, r"[\t\n\r\\]")).as_py():
        for raw, esc in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
            arr = pc.replace_substring(arr, raw, esc)
    return arr


TSV_VALUE_BYTES = 16  # a float32 as shortest round-trip text (at most 15 characters) and its TAB
Blocks = Iterator[tuple[int, np.ndarray, np.ndarray]]  # (first dense id, float32 rows, their names), in order


def _sub_blocks(n: int, rows: int) -> Iterator[slice]:
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def write_tsv_embeddings(path: str, blocks: Blocks, dim: int, budget: int | None = None) -> None:
    """PBG's TSV: no header, name then D values; floats as shortest text that reads back bit-exact.

    Pieces of up to 2^15 rows are formatted by Arrow's CSV writer (C++, releases the GIL) in a few threads
    and written in order, with at most ``2 * threads`` formatted pieces in memory: together at most 1/SHARE of
    ``budget`` (a row's text taken as ``TSV_VALUE_BYTES`` a value plus its name).
    """
    import io
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.csv as pacsv

    schema = pa.schema([("name", pa.string())] + [(f"v{i}", pa.float32()) for i in range(dim)])
    opts = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")

    def render(names: pa.Array, block: np.ndarray) -> bytes:
        arrays = [names] + [pa.array(block[:, i]) for i in range(dim)]
        buf = io.BytesIO()
        pacsv.write_csv(pa.Table.from_arrays(arrays, schema=schema), buf, opts)
        return buf.getvalue()

    threads = max(1, min(4, os.cpu_count() or 1))
    piece_rows = 1 << 15
    if budget is not None:
        per_row = TSV_VALUE_BYTES * dim + NAME_BYTES
        piece_rows = max(1, min(piece_rows, budget // SHARE // (2 * threads) // per_row))
    with open(path, "wb") as fh, ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        for _, block, names in blocks:
            escaped = _escape(names)
            for sl in _sub_blocks(len(block), piece_rows):
                pending.append(pool.submit(render, escaped[sl.start : sl.stop], block[sl]))
                if len(pending) >= 2 * threads:
                    fh.write(pending.popleft().result())
            while len(pending) > threads:  # the block may be freed once its pieces are formatted
                fh.write(pending.popleft().result())
        while pending:
            fh.write(pending.popleft().result())


def write_tsv_relations(path: str, params: list[RelationParam]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for p in params:
            values = "\t".join(np.format_float_positional(v, unique=True, trim="-") for v in p.values.ravel())
            fh.write(f"{p.relation}\t{p.side}\t{p.param}\t{values}\n")


def write_parquet(path: str, etype: str, blocks: Blocks, dim: int) -> None:
    """One row group per (at most 2^20 rows of a) block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("name", pa.string()), ("type", pa.dictionary(pa.int32(), pa.string())),
         ("vector", pa.list_(pa.float32(), dim))]
    )  # fmt: skip
    types = pa.array([etype])
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for _, block, names in blocks:
            for sl in _sub_blocks(len(block), 1 << 20):
                rows = block[sl]
                vector = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), dim)
                type_col = pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(rows), dtype=np.int32)), types)
                name = pa.array(names[sl], type=pa.string())
                writer.write_table(pa.Table.from_arrays([name, type_col, vector], schema=schema))


def write_parquet_relations(path: str, params: list[RelationParam]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "relation": [p.relation for p in params],
            "side": [p.side for p in params],
            "param": [p.param for p in params],
            "shape": pa.array([list(p.values.shape) for p in params], type=pa.list_(pa.int32())),
            "values": pa.array([p.values.ravel() for p in params], type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, path)


def write_npy(out: str, etype: str, count: int, blocks: Blocks, dim: int) -> None:
    """``<type>.npy`` written block by block after its header (np.load reads it as one array), and its names."""
    with (
        open(os.path.join(out, f"{etype}.npy"), "wb") as fh,
        open(os.path.join(out, f"{etype}_names.txt"), "w", encoding="utf-8", newline="\n") as names_fh,
    ):
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": (count, dim)}  # fmt: skip
        np.lib.format.write_array_header_1_0(fh, header)
        for _, block, names in blocks:
            fh.write(np.ascontiguousarray(block).data)
            names_fh.write("\n".join(_escape(names).to_numpy(zero_copy_only=False).tolist()) + "\n")
        if not count:
            names_fh.write("\n")


def write_npz_relations(path: str, params: list[RelationParam]) -> None:
    np.savez(path, **{f"{p.relation}/{p.side}/{p.param}": p.values for p in params})


# ----------------------------------------------------------------------------- driver


def _claim_output(out: str, overwrite: bool) -> None:
    parent = os.path.dirname(out)
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ExportError(f"--out {out}: {parent} is a file, not a directory")
    if os.path.exists(out) and not overwrite and not (os.path.isdir(out) and not os.listdir(out)):
        raise ExportError(f"{out}: already exists; pass --overwrite to replace it")


def _publish(tmp: str, out: str) -> None:
    """Rename the finished temp dir into place; an old output is moved aside first and removed after."""
    old = None
    if os.path.exists(out):
        old = f"{out}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)  # the previous output stays where it was
        raise
    if old is not None:
        remove_path(old)


def export(
    cfg: Config, fmt: str, out: str, checkpoint: str | None = None, overwrite: bool = False
) -> dict[str, object]:
    """Write every entity type and the relation parameters of a checkpoint; returns the export summary."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = os.path.abspath(out.rstrip("/"))
    _claim_output(out, overwrite)
    with storage_errors(out, f"nothing exported to {out}"), exclusive(out, "tbg export") as lock:
        lock.remove_leftovers()  # of an interrupted export: its temp dir, an output moved aside
        return _export_locked(cfg, fmt, out, checkpoint, overwrite)


def _export_locked(cfg: Config, fmt: str, out: str, checkpoint: str | None, overwrite: bool) -> dict[str, object]:
    graph = Graph.open(cfg.graph_dir)  # read under its reader lock, the checkpoint pinned (tbg/locking.py)
    try:
        cfg = resolve_partitions(cfg, graph)
        check_graph(cfg, graph)
        with resolve_checkpoint(cfg.training.save_dir, checkpoint) as ckpt:
            check_checkpoint(cfg, graph, ckpt)
            check_shards(cfg, graph, ckpt)
            params = relation_params(cfg, ckpt)
            return _write(cfg, fmt, out, overwrite, graph, ckpt, params)
    finally:
        graph.release()


def _named_blocks(graph: Graph, ckpt: Checkpoint, etype: str, dim: int, budget: int | None, tmp: str) -> Blocks:
    """``etype``'s vectors in dense-id blocks within ``budget`` (:func:`dense_blocks`), each with its names."""
    rows = block_rows(graph.entity_types[etype].count, dim, budget)
    names = graph.name_blocks(etype, rows)
    for start, block in dense_blocks(graph, ckpt, etype, dim, rows, tmp):  # vectors and names cut alike
        yield start, block, next(names, np.empty(0, dtype=object))  # (a type without entities: none)
    next(names, None)  # past the last block: a names dataset's checksum is checked there


def _write(
    cfg: Config, fmt: str, out: str, overwrite: bool, graph: Graph, ckpt: Checkpoint, params: list[RelationParam]
) -> dict[str, object]:
    """Every file in a temp dir beside ``out``, renamed into place at the end (removed on any failure)."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    summary: dict[str, object] = {
        "format": fmt,
        "checkpoint": ckpt.path,
        "checkpoint_version": ckpt.version,
        "relation_sides": str(cfg.model.relation_sides),
        "entity_types": {},
    }
    try:
        budget = budget_of(cfg)
        for table in cfg.model.embeddings.tables:
            etype, dim = table.name, table.embedding_dim
            count = graph.entity_types[etype].count
            summary["entity_types"][etype] = (count, dim)  # type: ignore[index]
            blocks = _named_blocks(graph, ckpt, etype, dim, budget, tmp)
            if fmt == "tsv":
                write_tsv_embeddings(os.path.join(tmp, f"{etype}_embeddings.tsv"), blocks, dim, budget)
            elif fmt == "parquet":
                write_parquet(os.path.join(tmp, f"{etype}.parquet"), etype, blocks, dim)
            else:
                write_npy(tmp, etype, count, blocks, dim)
        if fmt == "tsv":
            write_tsv_relations(os.path.join(tmp, "relation_parameters.tsv"), params)
        elif fmt == "parquet":
            write_parquet_relations(os.path.join(tmp, "relation_parameters.parquet"), params)
        else:
            write_npz_relations(os.path.join(tmp, "relations.npz"), params)
        with open(os.path.join(tmp, "export.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
        _claim_output(out, overwrite)  # nobody created it meanwhile
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary

"""Batch query files in, answers out (``--queries`` / ``--out`` / ``--json`` of neighbors and predict).

Query files are tab-separated text, one query per line, no header; ``#`` starts a comment line:

    predict:    LHS<TAB>RELATION<TAB>RHS   one side TYPE:NAME, the side to predict ``?``
    neighbors:  TYPE:NAME

``--out`` writes one row per result (query, query_type, query_name, relation, rank, type, name, score) as
Parquet (``.parquet``) or TSV (``.tsv``), by temp + rename.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Sequence
from typing import IO, Any

from tbg.errors import QueryError

OUT_FORMATS = (".parquet", ".tsv")


def read_lines(path: str) -> list[tuple[str, list[str]]]:
    """(label, fields) of every non-blank, non-comment line; label = ``path row N`` (1-based)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryError(f"{path}: unreadable query file: {exc}") from None
    out = [(f"{path} row {i + 1}", line.split("\t")) for i, line in enumerate(lines)]
    return [(where, f) for where, f in out if f != [""] and not f[0].startswith("#")]


def check_out(path: str) -> None:
    if not path.endswith(OUT_FORMATS):
        raise QueryError(f"{path}: --out must end in {' or '.join(OUT_FORMATS)}")


def write_answers(path: str, answers: Sequence[dict[str, Any]]) -> None:
    """One row per result, written atomically."""
    import pyarrow as pa

    cols: dict[str, list[Any]] = {
        k: [] for k in ("query", "query_type", "query_name", "relation", "rank", "type", "name", "score")
    }
    for qi, ans in enumerate(answers):
        q = ans["query"]
        known = q.get("lhs") or q.get("rhs") or q
        for rank, res in enumerate(ans["results"], 1):
            for key, value in (
                ("query", qi),
                ("query_type", known["type"]),
                ("query_name", known["name"]),
                ("relation", q.get("relation")),
                ("rank", rank),
                ("type", res["type"]),
                ("name", res["name"]),
                ("score", res["score"]),
            ):
                cols[key].append(value)
    table = pa.table(
        {
            "query": pa.array(cols["query"], pa.int64()),
            "query_type": pa.array(cols["query_type"], pa.string()),
            "query_name": pa.array(cols["query_name"], pa.string()),
            "relation": pa.array(cols["relation"], pa.string()),
            "rank": pa.array(cols["rank"], pa.int32()),
            "type": pa.array(cols["type"], pa.string()),
            "name": pa.array(cols["name"], pa.string()),
            "score": pa.array(cols["score"], pa.float32()),
        }
    )
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp, pcsv.WriteOptions(delimiter="\t", quoting_style="none"))
        os.replace(tmp, path)
    except OSError as exc:
        raise QueryError(f"{path}: cannot write answers: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def print_answers(answers: Sequence[dict[str, Any]], as_json: bool, out: IO[str] | None = None) -> None:
    """``--json``: one JSON object per line; else a short readable block per query."""
    out = out or sys.stdout
    for ans in answers:
        if as_json:
            out.write(json.dumps(ans, ensure_ascii=False) + "\n")
            continue
        q = ans["query"]
        if "relation" in q:
            side = "lhs" if "lhs" in q else "rhs"
            e = q[side]
            head = (
                f"{e['type']}:{e['name']} {q['relation']} ?"
                if side == "lhs"
                else f"? {q['relation']} {e['type']}:{e['name']}"
            )
        else:
            head = f"neighbours of {q['type']}:{q['name']}"
        out.write(head + "\n")
        for rank, res in enumerate(ans["results"], 1):
            out.write(f"{rank:>5}  {res['score']:>12.6g}  {res['type']}:{res['name']}\n")

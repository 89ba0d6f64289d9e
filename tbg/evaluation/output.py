"""Human-readable table and atomic JSON output of an evaluation result."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from tbg.durable_files import atomic_write_text


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """Overall and per-relation rows, each with lhs / rhs / mean sides (realistic ranks)."""
    proto = result["protocol"]
    hits = [f"hits@{k}" for k in proto["hits_at"]]
    header = ["relation", "side", "count", "MRR", *[h.replace("hits", "H") for h in hits], "MR", "AUC"]
    rows = []
    groups = [("overall", result["metrics"]["overall"]), *result["metrics"]["per_relation"].items()]
    for name, block in groups:
        for side in ("lhs", "rhs", "mean"):
            m = block[side]
            rows.append(
                [
                    name if side == "lhs" else "",
                    side,
                    str(m["count"]),
                    _fmt(m["mrr"]),
                    *[_fmt(m[h]) for h in hits],
                    _fmt(m["mean_rank"], 1),
                    _fmt(m["auc"]),
                ]
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    kind = {
        "sampled": "SAMPLED candidates (not all-entity)",
        "seen": "candidates: entities seen in any split",
        "all": "candidates: all declared entities",
    }.get(proto["candidates"], f"candidates: {proto['candidates']}")
    filt = f"filtered ({'+'.join(proto['filter_splits'])})" if proto["filtered"] else "raw (unfiltered)"
    title = (
        f"{result['split']}: {result['counts']['edges']} edges, {kind}, {filt}, realistic ranks,"
        f" {result['seconds']['total']:.2f} s on {result['device']}"
    )
    return "\n".join([title, *lines])


def write_json(path: str, result: dict[str, Any]) -> None:
    """Temp file + rename: a reader never sees a half-written result (an fsspec URL: one object put)."""
    text = json.dumps(result, indent=1, sort_keys=False, allow_nan=True) + "\n"
    if "://" in path:
        from tbg.remote_save_dir import write_text

        write_text(path, text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, text)

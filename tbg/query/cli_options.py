"""Options shared by ``tbg neighbors`` and ``tbg predict``."""

from __future__ import annotations

import argparse
from typing import Any

from tbg.query.index import KINDS


def add_common(parser: argparse.ArgumentParser, default_k: int) -> None:
    parser.add_argument("-k", type=int, default=default_k, help=f"results per query (default {default_k})")
    parser.add_argument("--json", action="store_true", help="one JSON object per query on stdout")
    parser.add_argument("--out", help="write every result row to this .parquet or .tsv file (batch queries)")
    parser.add_argument("--checkpoint", help="save_dir, checkpoints dir or version dir (default: latest)")
    parser.add_argument(
        "--index",
        choices=("auto", *KINDS),
        default="auto",
        help="flat = exact search, ivf = approximate (large tables), auto = ivf above 1M rows per partition",
    )
    parser.add_argument("--nprobe", type=int, help="ivf lists searched per query (more = higher recall)")
    parser.add_argument("--nlist", type=int, help="ivf lists per partition (default ~sqrt(rows))")
    parser.add_argument("--no-cache", action="store_true", help="build indexes in memory, do not read/write the cache")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "index": args.index,
        "nprobe": args.nprobe,
        "nlist": args.nlist,
        "cache_dir": None if args.no_cache else "default",
    }


def open_engine(args: argparse.Namespace):
    from tbg.config import load_config
    from tbg.query.engine import QueryEngine

    cfg = load_config(args.config, args.overrides)
    return QueryEngine.open(cfg, args.checkpoint, **engine_options(args))

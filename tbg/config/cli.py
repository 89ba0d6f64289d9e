"""`tbg config [CONFIG]`: the resolved config (YAML), its explanation (--explain) or the reference (--doc)."""

from __future__ import annotations

import argparse
import os
import sys

from tbg.config.docs import config_reference, explain
from tbg.config.loading import dump_config, load_config
from tbg.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--explain", action="store_true", help="each value with its meaning and default (* = changed)")
    what.add_argument("--doc", action="store_true", help="the config reference (docs/config.md), no CONFIG needed")
    parser.add_argument("--out", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    if args.doc:
        text = config_reference()
    elif args.config is None:
        raise ConfigError("a CONFIG is needed (only --doc works without one)")
    else:
        cfg = load_config(args.config, args.overrides)
        text = explain(cfg, args.config) if args.explain else dump_config(cfg)
    if args.out:  # temp + rename: an interrupted write never leaves half a file
        tmp = f"{args.out}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, args.out)
    else:
        sys.stdout.write(text)
    return 0

"""``tbg neighbors CONFIG --type T --name N -k 10``: the most similar entities of a type."""

from __future__ import annotations

import argparse

from tbg.errors import QueryError
from tbg.query.cli_options import add_common, open_engine
from tbg.query.query_files import check_out, print_answers, read_lines, write_answers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", help="entity type of the query entity")
    parser.add_argument("--name", help="name (names mode) or integer id (indices mode) of the query entity")
    parser.add_argument("--queries", help="file of TYPE:NAME lines, one query each")
    add_common(parser, default_k=10)


def run(args: argparse.Namespace) -> int:
    if args.out:
        check_out(args.out)
    if args.queries:
        if args.type or args.name:
            raise QueryError("give --queries or --type/--name, not both")
        engine = open_engine(args)
        lines = read_lines(args.queries)
        from tbg.query.engine import parse_entity

        types = list(engine.graph.entity_types)
        pairs, where = [], []
        for label, fields in lines:
            if len(fields) != 1:
                raise QueryError(f"{label}: expected one TYPE:NAME field, got {len(fields)}")
            try:
                pairs.append(parse_entity(fields[0], types))
            except QueryError as exc:
                raise QueryError(f"{label}: {exc}") from None
            where.append(label)
        answers = engine.neighbors_batch(pairs, args.k, where)
    else:
        if not (args.type and args.name is not None):
            raise QueryError("give --type and --name (or --queries FILE)")
        answers = open_engine(args).neighbors_batch([(args.type, args.name)], args.k)
    if args.out:
        write_answers(args.out, answers)
    if args.json or not args.out:
        print_answers(answers, args.json)
    return 0

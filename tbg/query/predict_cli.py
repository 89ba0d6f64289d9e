"""``tbg predict CONFIG --lhs TYPE:NAME --relation R -k 20``: top candidates under the model's score."""

from __future__ import annotations

import argparse

from tbg.errors import QueryError
from tbg.query.cli_options import add_common, open_engine
from tbg.query.query_files import check_out, print_answers, read_lines, write_answers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lhs", help="TYPE:NAME of the known lhs entity: rank rhs candidates")
    parser.add_argument("--rhs", help="TYPE:NAME of the known rhs entity: rank lhs candidates")
    parser.add_argument("--relation", help="relation name")
    parser.add_argument("--queries", help="file of LHS<TAB>RELATION<TAB>RHS lines, the predicted side '?'")
    parser.add_argument("--exclude-known", action="store_true", help="drop candidates of known edges (all splits)")
    add_common(parser, default_k=20)


def run(args: argparse.Namespace) -> int:
    if args.out:
        check_out(args.out)
    if args.queries:
        if args.lhs or args.rhs or args.relation:
            raise QueryError("give --queries or --lhs/--rhs/--relation, not both")
        engine = open_engine(args)
        queries = []
        for label, fields in read_lines(args.queries):
            if len(fields) != 3:
                raise QueryError(f"{label}: expected LHS<TAB>RELATION<TAB>RHS, got {len(fields)} fields")
            queries.append(engine.parse_prediction(*fields, label))
    else:
        if args.relation is None or (args.lhs is None) == (args.rhs is None):
            raise QueryError("give --relation and exactly one of --lhs / --rhs (or --queries FILE)")
        engine = open_engine(args)
        where = "--lhs" if args.lhs is not None else "--rhs"
        lhs, rhs = (args.lhs, "?") if args.lhs is not None else ("?", args.rhs)
        queries = [engine.parse_prediction(lhs, args.relation, rhs, where)]
    answers = engine.predict_batch(queries, args.k, args.exclude_known)
    if args.out:
        write_answers(args.out, answers)
    if args.json or not args.out:
        print_answers(answers, args.json)
    return 0

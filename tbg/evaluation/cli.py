"""`tbg eval CONFIG`: rank held-out edges of a trained checkpoint.  torch is imported only inside run()."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=("test", "valid", "train"), help="split to rank (default: eval.split)")
    parser.add_argument("--candidates", choices=("all", "seen", "sampled"), help="default: eval.candidates")
    parser.add_argument("--no-filter", action="store_true", help="raw protocol: keep other true edges as candidates")
    parser.add_argument("--checkpoint", help="save_dir, checkpoints dir or version dir (default: latest of save_dir)")
    parser.add_argument("--json-out", help="where to write the JSON (default: save_dir/eval_<split>.json)")
    parser.add_argument("--max-edges", type=int, help="evaluate only the first N edges of the split")


def run(args: argparse.Namespace) -> int:
    from tbg.config import load_config
    from tbg.evaluation.checkpoint_eval import evaluate_checkpoint
    from tbg.evaluation.output import format_table, write_json
    from tbg.run_files import eval_result_path

    cfg = load_config(args.config, args.overrides)
    split = args.split or cfg.eval.split
    result = evaluate_checkpoint(
        cfg,
        split=split,
        checkpoint=args.checkpoint,
        candidates=args.candidates,
        filtered=False if args.no_filter else None,
        max_edges=args.max_edges,
    )
    out = args.json_out or eval_result_path(cfg.training.save_dir, split)
    write_json(out, result)
    print(format_table(result))
    print(f"wrote {out}")
    return 0

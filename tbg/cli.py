"""`tbg import|train|eval|export|report|synth|config`: one YAML config describes a whole run.

Subcommand modules are imported lazily so that `tbg import` and `tbg export` never pay for `import torch`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import threading

# subcommand -> (module, help); each module defines add_arguments(parser) and run(args) -> int
COMMANDS = {
    "import": ("tbg.importer", "read source edges (gs://, s3://, local TSV/CSV/Parquet) into a partitioned graph dir"),
    "train": ("tbg.train.cli", "train embeddings bucket by bucket, checkpointing into training.save_dir"),
    "eval": ("tbg.evaluation.cli", "rank held-out edges: MRR, Hits@k, mean rank, AUC (filtered, all candidates)"),
    "export": ("tbg.export", "write entity vectors and relation parameters as TSV, Parquet or NumPy"),
    "neighbors": (
        "tbg.query.neighbors_cli",
        "the most similar entities of a type (faiss indexes cached per checkpoint)",
    ),
    "predict": ("tbg.query.predict_cli", "top rhs (or lhs) entities under the model's score for a relation"),
    "report": ("tbg.run_report", "draw the run as PNGs + index.md in save_dir/report (loss, edges/s, eval, ranks)"),
    "synth": ("tbg.synth", "generate a TwHIN-shaped sample graph (Parquet lhs/rel/rhs) for the config's tables"),
    "config": ("tbg.config.cli", "print the resolved config (--explain: with each value's meaning and default)"),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Only the chosen subcommand's module is imported (its top level must not import torch)."""
    parser = argparse.ArgumentParser(prog="tbg", description=__doc__.splitlines()[0])
    from tbg import __version__

    parser.add_argument("--version", action="version", version=f"tbg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("config", nargs="?" if name == "config" else None, help="YAML config (local path or fsspec URL)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one config value (repeatable), e.g. --set training.save_dir=runs/x; VALUE is YAML",
        )
        p.set_defaults(_module=module)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def _one_line(message: str) -> str:
    """Control characters (a newline in a config name or a file name) escaped, so an error stays one line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], message)


# commands whose process may end without the interpreter's teardown once they succeed (see `_finish_process`)
FAST_EXIT = {"train"}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its exit status.  Called without ``argv`` (the ``tbg`` process itself) a finished
    ``tbg train`` ends the process here (:func:`_finish_process`)."""
    as_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    code = _run(args)
    if as_process and code == 0 and args.command in FAST_EXIT and getattr(args, "nproc", None) is None:
        _finish_process(code)
    return code


def _finish_process(code: int) -> None:
    """End a finished command's process now, skipping the interpreter's teardown (module and object cleanup,
    torch's static destructors: most of a second, longer than a short run's final checkpoint).

    Only where nothing is left to do: the command has returned, so every file it wrote is closed and committed
    (temp + rename) and its locks are released with the process; tbg registers no exit handlers; a trainer
    launched by torchrun (which tears its process group down itself) and a process with another non-daemon
    thread still running (the ordinary exit would wait for it) take the ordinary exit.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if "TORCHELASTIC_RUN_ID" in os.environ or others:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
    from tbg import interrupts
    from tbg.errors import TbgError, storage_problem

    try:
        with interrupts.handled():
            return int(importlib.import_module(args._module).run(args) or 0)
    except TbgError as exc:
        print(f"tbg {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # a failing file system outside any storage_errors block
        problem = storage_problem(exc)
        if problem is None:
            raise
        print(f"tbg {args.command}: error: {_one_line(problem)}", file=sys.stderr)
        return 2
    except interrupts.Terminated:
        print(f"tbg {args.command}: terminated (SIGTERM); committed state kept", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"tbg {args.command}: interrupted; committed state kept", file=sys.stderr)
        return 130

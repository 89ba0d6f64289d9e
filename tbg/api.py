"""The Python API: the CLI's subcommands as functions (``tbg.load_config``, ``tbg.train``, ...), docs/python-api.md.

Each function calls the code path its subcommand calls, so a run from Python and one from the shell do the same
thing.  ``cfg`` may be a :class:`~tbg.config.Config`, a path/URL of a YAML config or a mapping (the YAML's
content); ``overrides`` are ``dotted.key=value`` strings, as ``--set`` takes them.  Nothing here imports torch at
module level; ``import_graph`` and ``export`` never import it at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tbg.config import Config, ConfigError, parse_config
from tbg.config import load_config as _load_yaml
from tbg.config.loading import apply_overrides

if TYPE_CHECKING:
    from tbg.importer import ImportSummary
    from tbg.trained_model import TrainedModel

ConfigLike = Config | str | os.PathLike | Mapping[str, Any]


def load_config(source: ConfigLike, overrides: Sequence[str] = ()) -> Config:
    """A validated config from a YAML path/URL, a mapping or a Config, with ``overrides`` applied."""
    if isinstance(source, Config):
        if not overrides:
            return source
        return parse_config(apply_overrides(source.to_dict(), overrides, "<config>"), "<config>")
    if isinstance(source, Mapping):
        return parse_config(apply_overrides(dict(source), overrides, "<dict>"), "<dict>")
    if isinstance(source, (str, os.PathLike)):
        return _load_yaml(os.fspath(source), overrides)
    raise ConfigError(f"<config>: expected a path, a mapping or a Config, got {type(source).__name__}")


def import_graph(
    cfg: ConfigLike,
    *,
    overwrite: bool = False,
    splits: Sequence[str] | None = None,
    progress: bool = False,
    append: str | Mapping[str, str] | None = None,
) -> ImportSummary:
    """``tbg import``: read the source edges into ``cfg.graph_dir``; returns the import summary.

    ``append`` (``tbg import --append``): grow the existing graph dir instead, with the edges of a source
    (train) or of ``{split: source}``; known entities keep their rows, new ones get new rows (the summary's
    ``new_entities``)."""
    if append is not None:
        from tbg.append import append_graph

        if overwrite or splits is not None:
            from tbg.errors import InputError

            raise InputError("import_graph: append= does not go with overwrite= or splits=")
        sources = {"train": append} if isinstance(append, str) else dict(append)
        return append_graph(load_config(cfg), sources, progress=progress)
    from tbg.importer import import_graph as run_import

    chosen = list(splits) if splits is not None else None
    return run_import(load_config(cfg), overwrite=overwrite, progress=progress, splits=chosen)


def train(
    cfg: ConfigLike, *, fresh: bool = False, progress: bool = False, allow_optimizer_change: bool = False
) -> dict[str, Any]:
    """``tbg train``: train or resume into ``training.save_dir``; returns the run summary (steps, loss, speed)."""
    from tbg.train.cli import train as run_training

    return run_training(load_config(cfg), fresh=fresh, progress=progress, allow_optimizer_change=allow_optimizer_change)


def evaluate(
    cfg: ConfigLike,
    split: str = "test",
    *,
    checkpoint: str | None = None,
    candidates: str | None = None,
    filtered: bool | None = None,
    max_edges: int | None = None,
) -> dict[str, Any]:
    """``tbg eval``: rank ``split`` with the latest (or the given) checkpoint; returns the metrics report.

    The report is the JSON ``tbg eval`` writes: ``report["metrics"]["overall"]["mean"]["mrr"]``, per side and
    per relation, with the protocol and counts.  ``candidates``/``filtered`` default to the config's ``eval``.
    """
    from tbg.evaluation.checkpoint_eval import evaluate_checkpoint

    return evaluate_checkpoint(
        load_config(cfg), split, checkpoint=checkpoint, candidates=candidates, filtered=filtered, max_edges=max_edges
    )


def export(
    cfg: ConfigLike, fmt: str, out: str, *, checkpoint: str | None = None, overwrite: bool = False
) -> dict[str, object]:
    """``tbg export``: write vectors and relation parameters as ``tsv``, ``parquet`` or ``npy`` into ``out``."""
    from tbg.export import export as run_export

    return run_export(load_config(cfg), fmt, out, checkpoint=checkpoint, overwrite=overwrite)


def load(save_dir: str, *, graph_dir: str | None = None) -> TrainedModel:
    """The trained model of ``save_dir`` (its latest checkpoint; or a checkpoints or version dir).

    It uses the config the checkpoint was trained with; ``graph_dir`` overrides that config's graph dir.
    """
    from tbg.trained_model import TrainedModel

    return TrainedModel.open(save_dir, graph_dir=graph_dir)


__all__ = ["evaluate", "export", "import_graph", "load", "load_config", "train"]

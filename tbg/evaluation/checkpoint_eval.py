"""Evaluate a committed checkpoint: resolve, validate against config and graph, then :func:`evaluate_model`."""

from __future__ import annotations

from typing import Any

import torch

from tbg.checkpoint import Checkpoint, resolve_checkpoint
from tbg.config import Config
from tbg.consistency import check_checkpoint, check_graph, check_shards, resolve_partitions
from tbg.errors import CheckpointError
from tbg.evaluation.evaluate import DEFAULT_CACHE_BYTES, evaluate_model
from tbg.graph import Graph
from tbg.memory import budget_of
from tbg.model.scoring import RelationModel


def load_relation_model(cfg: Config, ckpt: Checkpoint) -> RelationModel:
    """The config's RelationModel with the checkpoint's relation parameters (strict: names and shapes)."""
    model = RelationModel.from_config(cfg)
    params = {k: torch.from_numpy(v) for k, v in ckpt.relations().items()}
    try:
        model.load_state_dict(params, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(f"{ckpt.path}/relations.h5 does not match the config's relations: {detail}") from None
    return model


def open_trained(
    cfg: Config, checkpoint: str | None = None, split: str | None = None
) -> tuple[Graph, Checkpoint, RelationModel]:
    """The graph, the checkpoint (``checkpoint`` or the latest) and its relation model, each checked against
    ``cfg`` and one another; ``split``, when given, must have been imported.  ``tbg eval`` and ``tbg.load``.

    The graph holds its reader lock and the checkpoint its pin (tbg/locking.py) until released: no import
    replaces the graph and no pruning removes the version while they are read."""
    graph = Graph.open(cfg.graph_dir)
    ckpt = None
    try:
        cfg = resolve_partitions(cfg, graph)
        check_graph(cfg, graph)
        if split is not None:
            graph.split_info(split)  # a split that was never imported is one clear error
        ckpt = resolve_checkpoint(cfg.training.save_dir, checkpoint)
        check_checkpoint(cfg, graph, ckpt)
        check_shards(cfg, graph, ckpt)
        return graph, ckpt, load_relation_model(cfg, ckpt)
    except BaseException:
        if ckpt is not None:
            ckpt.release()
        graph.release()
        raise


def evaluate_checkpoint(
    cfg: Config,
    split: str = "test",
    checkpoint: str | None = None,
    candidates: str | None = None,
    filtered: bool | None = None,
    max_edges: int | None = None,
) -> dict[str, Any]:
    graph, ckpt, model = open_trained(cfg, checkpoint, split)
    try:
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
        budget = budget_of(cfg)  # candidate partitions cached within the budget (half: edges, filters)
        cache = DEFAULT_CACHE_BYTES if budget is None else min(DEFAULT_CACHE_BYTES, budget // 2)
        result = evaluate_model(
            cfg,
            graph,
            ckpt.embeddings,
            model,
            split,
            candidates=candidates,
            filtered=filtered,
            max_edges=max_edges,
            cache_bytes=cache,
        )
    finally:
        ckpt.release()
        graph.release()
    result["checkpoint"] = {"path": ckpt.path, "name": ckpt.name, "version": ckpt.version, "progress": ckpt.progress}
    return result

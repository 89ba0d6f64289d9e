"""The config the synthetic benchmarks share: one entity type ``entity``, adagrad everywhere, unused sources."""

from __future__ import annotations

import os
from typing import Any


def one_type_config(
    save_dir: str,
    *,
    dim: int,
    count: int | None = None,
    parts: int = 1,
    relations: int = 1,
    operator: str = "translation",
    model: dict[str, Any] | None = None,
    data: dict[str, str] | None = None,
    graph: dict[str, Any] | None = None,
):
    """The parsed config of ``relations`` relations (``rel``, or ``r0``..) of ``operator`` over ``entity``; ``model``
    adds model keys, ``data`` gives each split's data root (default: train/valid ``unused``)."""
    from tbg.config import parse_config

    opt = {"adagrad": {"lr": 0.1}}
    table: dict[str, Any] = {"name": "entity", "embedding_dim": dim, "num_partitions": parts, "optimizer": opt}
    if count is not None:
        table["num_embeddings"] = count
    names = ["rel"] if relations == 1 else [f"r{i}" for i in range(relations)]
    splits = data or {"train": "unused", "valid": "unused"}
    keys = {"train": "train_data", "valid": "validation_data", "test": "test_data"}
    return parse_config(
        {
            "training": {"save_dir": os.path.abspath(save_dir)},
            "model": {
                "embeddings": {"tables": [table]},
                "relations": [{"name": n, "lhs": "entity", "rhs": "entity", "operator": operator} for n in names],
                "translation_optimizer": opt,
                **(model or {}),
            },
            **{keys[split]: {"data_root": root} for split, root in splits.items()},
            "graph": graph or {},
        }
    )

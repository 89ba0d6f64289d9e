"""The one place tests build their inputs: configs, graph dirs, checkpoints and source files.

A test describes its graph once, as a config (entity types with count/dim/partitions, relations with their
operator), and everything else follows from it: :func:`write_graph` writes the graph dir that config
describes through the real writer (:class:`tbg.graph.GraphWriter`), :func:`write_checkpoint` commits a
checkpoint of it.  Edges are always ``(lhs, rel, rhs)`` arrays of dense ids.  Every path is given by the
test (``tmp_path``), so nothing depends on the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tbg.config import Config, parse_config
from tbg.graph import EdgeArrays, GraphWriter, PartitionLayout

REPO = Path(__file__).resolve().parents[1]  # the checkout under test (configs/, tools/)

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]  # (lhs, rel, rhs) dense ids
Types = dict[str, tuple[int | None, int, int]]  # name -> (count, None: counted by a names-mode import; dim; partitions)
Relations = list[tuple[str, ...]]  # (name, lhs type, rhs type[, operator])

NODES: Types = {"node": (400, 16, 1)}
NODE_RELATIONS: Relations = [(f"r{i}", "node", "node", "translation") for i in range(3)]
# the TwHIN seed's shape, scaled down (importer tests)
TWHIN_TYPES: Types = {"user": (50, 4, 1), "tweet": (30, 4, 1)}
TWHIN_RELATIONS: Relations = [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("follow", "user", "user")]
# two entity types, relations of three (lhs, rhs) type pairs (one pair with two relations): multi-group batches
TYPED_TYPES: Types = {"a": (120, 8, 2), "b": (80, 8, 1)}
TYPED_RELATIONS: Relations = [("ab", "a", "b", "translation"), ("ba", "b", "a", "translation"),
                              ("aa", "a", "a", "translation"), ("ab2", "a", "b", "diagonal")]  # fmt: skip


def make_config(graph_dir: str | Path, **kw: Any) -> Config:
    """:func:`config_data` (same arguments), parsed."""
    return parse_config(config_data(graph_dir, **kw))


def config_data(
    graph_dir: str | Path,
    *,
    save_dir: str | Path | None = None,
    types: Types | None = None,
    relations: Relations | None = None,
    partitions: int | None = None,
    optimizer: dict[str, Any] | None = None,
    train: str = "unused",
    valid: str = "unused",
    test: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The YAML mapping of a small, fast config for ``graph_dir`` (default: one type ``node``, 3 translation relations).

    ``partitions`` sets every type's partition count, ``optimizer`` every table's optimizer block (default
    adagrad, lr 0.1, also the relations'); ``train``/``valid``/``test`` are the sources' data
    roots; ``overrides`` sets dotted keys (``{"model.loss": "logistic", "graph.header": True}``).
    ``save_dir`` defaults to ``run`` beside ``graph_dir``.
    """
    types = dict(NODES if types is None else types)
    if partitions is not None:
        types = {n: (c, d, partitions) for n, (c, d, _) in types.items()}
    relations = NODE_RELATIONS if relations is None else relations
    graph_dir = str(graph_dir)
    save_dir = os.path.join(os.path.dirname(graph_dir), "run") if save_dir is None else str(save_dir)
    relation_optimizer = {"adagrad": {"lr": 0.1}}
    optimizer = relation_optimizer if optimizer is None else optimizer
    data_section = {"per_replica_batch_size": 100, "in_batch_negatives": 100, "global_negatives": 50}
    data: dict[str, Any] = {
        "runtime": {"seed": 0, "num_threads": 1},
        "training": {
            "save_dir": save_dir, "num_train_steps": 100000, "num_epochs": 4, "checkpoint_every_n": 100000,
            "train_log_every_n": 10, "eval_log_every_n": 100000, "num_eval_steps": 2,
        },
        "model": {
            "translation_optimizer": relation_optimizer,
            "embeddings": {"tables": [
                {"name": name, "embedding_dim": dim, "num_partitions": parts, "optimizer": optimizer,
                 **({"num_embeddings": count} if count is not None else {})}
                for name, (count, dim, parts) in types.items()
            ]},
            "relations": [
                {"name": r[0], "lhs": r[1], "rhs": r[2], **({"operator": r[3]} if len(r) > 3 else {})}
                for r in relations
            ],
            "comparator": "dot", "loss": "softmax",
        },
        "train_data": {"data_root": train, **data_section},
        "validation_data": {"data_root": valid, **data_section},
        "graph": {"dir": graph_dir},
    }  # fmt: skip
    if test is not None:
        data["test_data"] = {"data_root": test}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data


def write_config_file(path: str | Path, graph_dir: str | Path, **kw: Any) -> str:
    """:func:`config_data` (same arguments) written as YAML at ``path`` (for tests that drive the CLI); its path."""
    import yaml

    Path(path).write_text(yaml.safe_dump(config_data(graph_dir, **kw), sort_keys=False))
    return str(path)


def twhin_config(graph_dir: str | Path, **kw: Any) -> Config:
    """:func:`make_config` in the TwHIN seed's shape (user, tweet; fav, reply, follow), for the importer tests."""
    kw.setdefault("types", TWHIN_TYPES)
    kw.setdefault("relations", TWHIN_RELATIONS)
    return make_config(graph_dir, **kw)


def child_env() -> dict[str, str]:
    """The environment for a child ``python -m tbg``: this checkout first on PYTHONPATH, so the child runs the
    tree under test from any working directory."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPO) if not path else f"{REPO}{os.pathsep}{path}"}


def write_graph(
    cfg: Config,
    splits: dict[str, Edges],
    *,
    seed: int = 0,
    names: bool | dict[str, list[str]] = False,
    weights: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The graph dir ``cfg`` describes, holding ``splits`` (edges by dense id, shuffled within each bucket as
    the importer does); returns each type's ``perm`` (shuffled position -> dense id).

    ``names``: names mode, entity ``i`` of type ``t`` named ``names[t][i]`` (``True``: ``t/éi``);
    ``weights``: per split, one weight per edge.
    """
    rng = np.random.default_rng(seed)
    writer = GraphWriter(cfg.graph_dir)
    tables = {t.name: t for t in cfg.model.embeddings.tables}
    perms, positions, layouts = {}, {}, {}
    for name, t in tables.items():
        perms[name] = rng.permutation(t.num_embeddings).astype(np.int64)
        label = None
        if names:
            given = names.get(name) if isinstance(names, dict) else None
            label = np.array(given or [f"{name}/é{i}" for i in range(t.num_embeddings)], dtype=object)
        positions[name] = writer.write_entities(name, perms[name], t.num_partitions, label)
        layouts[name] = PartitionLayout(t.num_embeddings, t.num_partitions)
    rels = cfg.model.relations
    entries = {}
    for split, (lhs, rel, rhs) in splits.items():
        lhs, rel, rhs = (np.asarray(a, dtype=np.int64) for a in (lhs, rel, rhs))
        part = {side: np.zeros(len(rel), np.int64) for side in ("lhs", "rhs")}
        offset = {side: np.zeros(len(rel), np.int64) for side in ("lhs", "rhs")}
        for r, spec in enumerate(rels):
            m = rel == r
            for side, ids in (("lhs", lhs), ("rhs", rhs)):
                etype = getattr(spec, side)
                part[side][m], offset[side][m] = layouts[etype].locate(positions[etype][ids[m]])
        weight = None if weights is None else weights.get(split)
        buckets = {}
        for i, j in sorted(set(zip(part["lhs"].tolist(), part["rhs"].tolist()))):
            m = rng.permutation(np.nonzero((part["lhs"] == i) & (part["rhs"] == j))[0])
            edges = EdgeArrays(
                offset["lhs"][m].astype(np.int32), offset["rhs"][m].astype(np.int32), rel[m].astype(np.int32),
                None if weight is None else np.asarray(weight, np.float32)[m],
            )  # fmt: skip
            writer.write_bucket(split, i, j, edges)
            buckets[f"{i}_{j}"] = len(m)
        entries[split] = {"num_edges": len(rel), "buckets": buckets, "has_weight": weight is not None}
    writer.write_manifest(
        "names" if names else "indices",
        {n: (t.num_embeddings, t.num_partitions) for n, t in tables.items()},
        [(r.name, r.lhs, r.rhs) for r in rels],
        entries,
    )
    return perms


def write_checkpoint(
    cfg: Config, perms: dict[str, np.ndarray], dense: dict[str, np.ndarray], model: Any, version: int = 1
) -> str:
    """Commit checkpoint ``version`` of ``cfg.training.save_dir`` holding ``dense[type]`` (rows by dense id,
    split into the graph's partitions) and ``model``'s relation parameters."""
    from tbg.checkpoint import CheckpointStore
    from tbg.config import dump_config

    writer = CheckpointStore(cfg.training.save_dir).begin(version)
    for t in cfg.model.embeddings.tables:
        bounds = PartitionLayout(t.num_embeddings, t.num_partitions).bounds
        for p in range(t.num_partitions):
            rows = dense[t.name][perms[t.name][bounds[p] : bounds[p + 1]]]
            writer.write_embeddings(t.name, p, rows.astype(np.float32))
    writer.write_relations({k: v.detach().numpy() for k, v in model.state_dict().items()})
    writer.write_file("config.yaml", dump_config(cfg))
    return writer.commit({"step": 7})


def integer_model(cfg: Config, seed: int, low: int = -2, high: int = 3) -> Any:
    """A RelationModel whose parameters are small integers, so every score is exact in fp32."""
    import torch

    from tbg.model.scoring import RelationModel

    gen = torch.Generator().manual_seed(seed)
    model = RelationModel.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(low, high, p.shape, generator=gen).float())
    return model


def planted(n: int = 400, clusters: int = 8, num_rel: int = 3, edges: int = 6000, seed: int = 0, shift: int = 0):
    """Edges ``(lhs, rel, rhs)`` among ``n`` entities in clusters (relation r links cluster c to cluster
    ``(c + shift·(r + 1)) % clusters``) and each entity's cluster."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, clusters, n)
    members = [np.nonzero(cluster == c)[0] for c in range(clusters)]
    lhs = rng.integers(0, n, edges)
    rel = rng.integers(0, num_rel, edges)
    target = (cluster[lhs] + shift * (rel + 1)) % clusters
    rhs = np.array([members[t][rng.integers(0, len(members[t]))] for t in target])
    return lhs, rel, rhs, cluster


def planted_graph(cfg: Config, seed: int = 0, edges: int = 6000) -> tuple[dict[str, Edges], np.ndarray]:
    """A planted graph for ``cfg`` (one type, its relations): ``edges`` train edges, 200 valid, 200 test."""
    (table,) = cfg.model.embeddings.tables
    lhs, rel, rhs, cluster = planted(n=table.num_embeddings, num_rel=len(cfg.model.relations), edges=edges + 400,
                                     seed=seed)  # fmt: skip
    cuts = {"train": slice(0, edges), "valid": slice(edges, edges + 200), "test": slice(edges + 200, None)}
    splits = {name: (lhs[s], rel[s], rhs[s]) for name, s in cuts.items()}
    write_graph(cfg, splits, seed=seed)
    return splits, cluster


def typed_graph(cfg: Config, edges: int = 3000, seed: int = 0) -> dict[str, Edges]:
    """Random edges of every relation of ``cfg`` (ids valid for its types, e.g. TYPED_TYPES): ``edges`` train
    edges and 100 valid; returns the splits."""
    rng = np.random.default_rng(seed)
    n, rels = edges + 100, cfg.model.relations
    count = {t.name: t.num_embeddings for t in cfg.model.embeddings.tables}
    rel = rng.integers(0, len(rels), n)
    lhs = (rng.random(n) * np.array([count[r.lhs] for r in rels])[rel]).astype(np.int64)
    rhs = (rng.random(n) * np.array([count[r.rhs] for r in rels])[rel]).astype(np.int64)
    cut = {"train": slice(0, edges), "valid": slice(edges, None)}
    splits = {s: (lhs[c], rel[c], rhs[c]) for s, c in cut.items()}
    write_graph(cfg, splits, seed=seed)
    return splits


def random_index_edges(n: int, seed: int, sizes: dict[str, int], relations: Relations) -> dict[str, np.ndarray]:
    """Columns ``lhs, rel, rhs, weight`` of ``n`` integer-id edges valid for ``relations`` and type ``sizes``."""
    rng = np.random.default_rng(seed)
    rel = rng.integers(0, len(relations), n)
    lhs_n = np.array([sizes[r[1]] for r in relations])[rel]
    rhs_n = np.array([sizes[r[2]] for r in relations])[rel]
    return {
        "lhs": (rng.random(n) * lhs_n).astype(np.int64),
        "rel": rel.astype(np.int64),
        "rhs": (rng.random(n) * rhs_n).astype(np.int64),
        "weight": rng.random(n).astype(np.float32),
    }


def write_parquet(path: Path, cols: dict[str, Any], row_group_size: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path, row_group_size=row_group_size)


def write_tsv(path: Path, rows: list[tuple], header: list[str] | None = None, delimiter: str = "\t") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [delimiter.join(header)] if header else []
    lines += [delimiter.join(str(x) for x in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")

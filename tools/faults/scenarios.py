"""Tiny graphs for the fault trials and their reference runs (import, train, export, eval).

Four scenarios: TSV in names mode and Parquet in indices mode, each with P=1 and P=2 (P=2 evicts
partitions every bucket).  Every path in a scenario's config is relative, so a trial works on a copy of
the scenario dir and its outputs compare byte for byte with the reference's.  Training uses one Hogwild
worker and one thread, which makes a run bit-reproducible: an interrupted-and-resumed run must end with
exactly the reference's vectors.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field

import harness
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

EPOCHS, BATCH, EVERY_N = 2, 50, 5
USERS, TWEETS = 40, 30


@dataclass
class Scenario:
    name: str
    root: str  # holds src/, cfg.yaml, graph/ (reference import)
    ref_save: str = ""  # uninterrupted training (all versions kept)
    mid_save: str = ""  # training killed right after a mid-run commit (a real crash state)
    ref_export: str = ""
    ref_eval: str = ""
    walls: dict[str, float] = field(default_factory=dict)
    ops: dict[str, list[str]] = field(default_factory=dict)


def _edges(rng: random.Random, n: int) -> list[tuple[int, int, int]]:
    out = []
    for _ in range(n):
        rel = rng.randrange(2)
        out.append((rng.randrange(USERS), rel, rng.randrange(TWEETS if rel == 0 else USERS)))
    return out


def _write_sources(root: str, mode: str, seed: int) -> dict:
    rng = random.Random(seed)
    src = os.path.join(root, "src")
    os.makedirs(src, exist_ok=True)
    splits = {"train": _edges(rng, 600), "valid": _edges(rng, 60)}
    rels = ["fav", "follow"]
    for split, edges in splits.items():
        if mode == "names":
            with open(os.path.join(src, f"{split}.tsv"), "w") as fh:
                for x, r, y in edges:
                    fh.write(f"u{x}\t{rels[r]}\t{'t' if r == 0 else 'u'}{y}\n")
        else:
            cols = np.array(edges, dtype=np.int64).T
            weight = np.array([rng.random() + 0.5 for _ in edges], dtype=np.float32)
            table = pa.table({"lhs": cols[0], "rel": cols[1], "rhs": cols[2], "weight": weight})
            pq.write_table(table, os.path.join(src, f"{split}.parquet"), row_group_size=128)
    ext = "tsv" if mode == "names" else "parquet"
    table = {"embedding_dim": 8, "optimizer": {"adagrad": {"lr": 0.1}}}
    graph: dict = {"dir": "graph", "id_mode": mode, "format": ext}
    if mode == "indices":
        graph["columns"] = {"lhs": "lhs", "rel": "rel", "rhs": "rhs", "weight": "weight"}
    return {"tables": table, "graph": graph, "ext": ext}


def config(parts: int, mode: str, spec: dict, **training) -> dict:
    sizes = {"user": USERS, "tweet": TWEETS}
    tables = []
    for name in ("user", "tweet"):
        t = {"name": name, "num_partitions": parts, **spec["tables"]}
        if mode == "indices":
            t["num_embeddings"] = sizes[name]
        tables.append(t)
    batch = {"per_replica_batch_size": BATCH, "in_batch_negatives": 10, "global_negatives": 10}
    return {
        "runtime": {"hogwild_workers": 1, "num_threads": 1, "device": "cpu"},
        "training": {
            "save_dir": "save",
            "num_epochs": EPOCHS,
            "checkpoint_every_n": EVERY_N,
            "train_log_every_n": 2,
            **training,
        },
        "model": {
            "embeddings": {"tables": tables},
            "relations": [
                {"name": "fav", "lhs": "user", "rhs": "tweet", "operator": "translation"},
                {"name": "follow", "lhs": "user", "rhs": "user", "operator": "diagonal"},
            ],
            "translation_optimizer": {"adagrad": {"lr": 0.1}},
        },
        "graph": spec["graph"],
        "train_data": {"data_root": f"src/train.{spec['ext']}", **batch},
        "validation_data": {"data_root": f"src/valid.{spec['ext']}", **batch},
    }


def write_config(path: str, cfg: dict) -> None:
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)


def copy_state(scenario: Scenario, dest: str, save: str | None = None, graph: bool = True) -> str:
    """A fresh trial dir: sources + config, the reference graph, and optionally a save_dir state."""
    os.makedirs(dest)
    shutil.copytree(os.path.join(scenario.root, "src"), os.path.join(dest, "src"))
    shutil.copy(os.path.join(scenario.root, "cfg.yaml"), dest)
    if graph:
        shutil.copytree(os.path.join(scenario.root, "graph"), os.path.join(dest, "graph"))
    if save:
        shutil.copytree(save, os.path.join(dest, "save"), symlinks=True)
    return dest


def _reference(s: Scenario, what: str, argv: list[str], cwd: str, timeout_s: float) -> None:
    r = harness.run_tbg(argv, cwd, record_ops=True, timeout_s=timeout_s)
    if r.rc != 0:
        raise RuntimeError(f"reference {what} failed ({r.command}): rc {r.rc}\n{r.stderr[-2000:]}")
    s.walls[what], s.ops[what] = r.wall_s, r.ops


def build(base: str, name: str, mode: str, parts: int, seed: int, timeout_s: float) -> Scenario:
    """Sources, the reference import/train/export/eval, and a crash state after a mid-run commit."""
    root = os.path.join(base, name)
    os.makedirs(root)
    spec = _write_sources(root, mode, seed)
    write_config(os.path.join(root, "cfg.yaml"), config(parts, mode, spec))
    s = Scenario(name, root)
    _reference(s, "import", ["import", "cfg.yaml", "--no-progress"], root, timeout_s)
    ref = copy_state(s, os.path.join(base, f"{name}-ref"))
    _reference(s, "train", ["train", "cfg.yaml", "--no-progress"], ref, timeout_s)
    _reference(s, "export", ["export", "cfg.yaml", "--format", "tsv", "--out", "out"], ref, timeout_s)
    _reference(s, "eval", ["eval", "cfg.yaml", "--split", "valid", "--json-out", "eval.json"], ref, timeout_s)
    s.ref_save, s.ref_export, s.ref_eval = (os.path.join(ref, x) for x in ("save", "out", "eval.json"))
    # a genuine crash state: kill -9 just after `latest` moves for the second commit
    commits = [i for i, op in enumerate(s.ops["train"], 1) if op.startswith("replace") and op.endswith("latest")]
    mid = copy_state(s, os.path.join(base, f"{name}-mid"))
    plan = harness.KillPlan(op_index=commits[len(commits) // 2], when="after")
    r = harness.run_tbg(["train", "cfg.yaml", "--no-progress"], mid, plan=plan, timeout_s=timeout_s)
    if not r.killed:
        raise RuntimeError(f"could not make the mid-run crash state: rc {r.rc}\n{r.stderr[-2000:]}")
    s.mid_save = os.path.join(mid, "save")
    return s


SCENARIOS = [("names_tsv_p1", "names", 1), ("names_tsv_p2", "names", 2), ("indices_pq_p1", "indices", 1),
             ("indices_pq_p2", "indices", 2)]  # fmt: skip

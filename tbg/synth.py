"""`tbg synth`: a TwHIN-shaped sample graph with learnable structure, for offline runs and benchmarks.

TwHIN's own data (``gs://follows_tml_01/...``) is Twitter-internal, so the seed config cannot run as
shipped.  This writes a graph of the same shape — sized by the config's tables and relations, as Parquet
with int64 ``lhs``/``rel``/``rhs`` columns (TwHIN's edge format) — whose structure a model can learn and
that punishes a model which ignores the relation:

- every entity belongs to one community, and with probability ``multi_community`` to a second one;
  an edge joins a lhs entity to a rhs entity of one of its communities (probability ``in_community``),
  else to a random one (noise);
- every rhs entity has a *kind* (think: text, photo, video, link); relation ``r`` draws its rhs from kind
  ``r mod kinds`` with probability ``kind_affinity``.  The kind is global across communities, so a
  per-relation translation (TwHIN's operator) can learn it, while a relation-blind model spreads its
  ranking over every kind;
- lhs activity and rhs popularity follow Zipf laws (few heavy users and viral tweets, a long tail).

Rows are deduplicated and shuffled, so any row window (the config's ``limit``/``offset``) is an unbiased
sample: train reads rows ``[0, N - Nv)``, validation the last ``Nv``.  A disjoint ``test`` split goes to
separate files.  Output is written to a temp dir and renamed into place (a crash leaves nothing behind).

This module must not import torch: it runs before any training and start-up time matters.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tbg.config import Config, load_config
from tbg.errors import SynthError

DEFAULT_EDGES = 1_000_000
DEFAULT_TEST_EDGES = 10_000
EDGE_SCHEMA = pa.schema([("lhs", pa.int64()), ("rel", pa.int64()), ("rhs", pa.int64())])


@dataclass(frozen=True)
class SynthParams:
    """Knobs of the latent structure; the defaults give a graph a d=32 model learns in a few epochs."""

    num_communities: int = 32
    multi_community: float = 0.25  # probability of a second community
    in_community: float = 0.85  # edge stays inside one of the lhs entity's communities
    kind_affinity: float = 0.8  # relation r draws its rhs from kind r mod kinds
    activity_exponent: float = 1.0  # Zipf exponent of lhs activity
    popularity_exponent: float = 0.8  # Zipf exponent of rhs popularity
    num_parts: int = 4  # Parquet files for the main split


@dataclass
class Latent:
    """The hidden structure of one entity type (returned so tests can check the edges follow it)."""

    primary: np.ndarray  # community of each entity
    secondary: np.ndarray  # second community, or -1
    kind: np.ndarray  # kind of each entity (meaningful on rhs tables)
    weight: np.ndarray  # Zipf activity (lhs) / popularity (rhs), sums to 1


@dataclass
class SynthResult:
    out_dir: Path
    num_edges: int
    num_test_edges: int
    relation_counts: list[int]
    latent: dict[str, Latent] = field(repr=False)
    kinds: int = 1


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights over a random permutation of the entities (rank 1 is a random entity)."""
    ranks = rng.permutation(n).astype(np.float64) + 1.0
    w = ranks**-exponent
    return w / w.sum()


def _make_latent(n: int, kinds: int, exponent: float, p: SynthParams, rng: np.random.Generator) -> Latent:
    primary = rng.integers(0, p.num_communities, n)
    second = rng.integers(0, p.num_communities, n)
    has_second = (rng.random(n) < p.multi_community) & (second != primary)
    secondary = np.where(has_second, second, -1)
    kind = rng.integers(0, kinds, n)
    return Latent(primary, secondary, kind, _zipf_weights(n, exponent, rng))


class _CellSampler:
    """Draws rhs entities of a given (community, kind) cell in proportion to popularity, vectorised.

    Each (entity, community) membership is one slot; slots are sorted by cell so a cell is a contiguous
    range of one global cumulative-weight array, and sampling is one ``searchsorted``.
    """

    def __init__(self, latent: Latent, num_communities: int, kinds: int) -> None:
        ent = np.arange(len(latent.primary))
        multi = latent.secondary >= 0
        slot_ent = np.concatenate([ent, ent[multi]])
        slot_com = np.concatenate([latent.primary, latent.secondary[multi]])
        slot_cell = slot_com * kinds + latent.kind[slot_ent]
        order = np.argsort(slot_cell, kind="stable")
        self.slot_ent = slot_ent[order]
        cum = np.cumsum(latent.weight[self.slot_ent])
        self.cum = cum
        num_cells = num_communities * kinds
        cell_sorted = slot_cell[order]
        self.start = np.searchsorted(cell_sorted, np.arange(num_cells), side="left")
        self.end = np.searchsorted(cell_sorted, np.arange(num_cells), side="right")
        lo = np.where(self.start > 0, cum[np.maximum(self.start - 1, 0)], 0.0)
        hi = np.where(self.end > 0, cum[np.maximum(self.end - 1, 0)], 0.0)
        self.lo, self.mass = lo, hi - lo
        self.global_cum = np.cumsum(latent.weight)

    def sample(self, cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(len(cells))
        out = np.empty(len(cells), dtype=np.int64)
        ok = self.mass[cells] > 0
        target = self.lo[cells[ok]] + u[ok] * self.mass[cells[ok]]
        idx = np.searchsorted(self.cum, target, side="right")
        idx = np.clip(idx, self.start[cells[ok]], self.end[cells[ok]] - 1)  # guard float round-off
        out[ok] = self.slot_ent[idx]
        # an empty cell (tiny tables only): fall back to popularity over the whole table
        gc = self.global_cum
        out[~ok] = np.minimum(np.searchsorted(gc, u[~ok] * gc[-1], side="right"), len(gc) - 1)
        return out


def _table_sizes(cfg: Config) -> dict[str, int]:
    sizes = {}
    for i, t in enumerate(cfg.model.embeddings.tables):
        if t.num_embeddings is None:
            raise SynthError(f"model.embeddings.tables[{i}].num_embeddings: synth needs every table sized")
        sizes[t.name] = t.num_embeddings
    return sizes


def _relation_mix(num_relations: int) -> np.ndarray:
    """Relation frequencies falling off like 1/(r+1): fav is the most common, as in engagement logs."""
    w = 1.0 / np.arange(1, num_relations + 1)
    return w / w.sum()


def _sample_edges(
    n: int,
    cfg: Config,
    latent: dict[str, Latent],
    samplers: dict[str, _CellSampler],
    kinds: int,
    p: SynthParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """``n`` raw (possibly duplicate) edges as an (n, 3) int64 array."""
    rels = cfg.model.relations
    rel = rng.choice(len(rels), size=n, p=_relation_mix(len(rels)))
    lhs = np.empty(n, dtype=np.int64)
    rhs = np.empty(n, dtype=np.int64)
    for r, relation in enumerate(rels):
        mask = rel == r
        m = int(mask.sum())
        if m == 0:
            continue
        src = latent[relation.lhs]
        cum = np.cumsum(src.weight)
        u = np.minimum(np.searchsorted(cum, rng.random(m) * cum[-1], side="right"), len(cum) - 1)
        # community of this edge: one of u's memberships, or a random one (noise)
        com = np.where((src.secondary[u] >= 0) & (rng.random(m) < 0.5), src.secondary[u], src.primary[u])
        noise = rng.random(m) >= p.in_community
        com = np.where(noise, rng.integers(0, p.num_communities, m), com)
        kind = np.where(rng.random(m) < p.kind_affinity, r % kinds, rng.integers(0, kinds, m))
        lhs[mask] = u
        rhs[mask] = samplers[relation.rhs].sample(com * kinds + kind, rng)
    return np.stack([lhs, rel, rhs], axis=1)


def _unique_edges(
    total: int, cfg: Config, sizes: dict[str, int], sample: Callable[[int], np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """``total`` distinct edges in a seeded random order; oversamples (``sample(n)``: n raw edges) until enough
    survive dedup."""
    num_rel = len(cfg.model.relations)
    max_lhs = max(sizes[r.lhs] for r in cfg.model.relations)
    max_rhs = max(sizes[r.rhs] for r in cfg.model.relations)
    if max_lhs * num_rel * max_rhs >= 2**62:
        raise SynthError("tables too large to deduplicate edges with int64 keys")
    capacity = sum(sizes[r.lhs] * sizes[r.rhs] for r in cfg.model.relations)
    if total > capacity // 2:
        raise SynthError(f"asked for {total:,} edges but the tables allow only {capacity:,} distinct ones")
    keys = np.empty(0, dtype=np.int64)
    batch = int(total * 1.15) + 1000
    for _ in range(50):
        e = sample(batch)
        new = (e[:, 0] * num_rel + e[:, 1]) * max_rhs + e[:, 2]
        # keep first occurrences in sampling order, so the result does not depend on sort order
        merged = np.concatenate([keys, new])
        _, first = np.unique(merged, return_index=True)
        keys = merged[np.sort(first)]
        if len(keys) >= total:
            break
        batch = max(1000, int((total - len(keys)) * 1.5))
    else:  # pragma: no cover - needs a pathological Zipf exponent
        raise SynthError(f"could not draw {total:,} distinct edges; lower --edges")
    keys = keys[:total]
    keys = keys[rng.permutation(total)]
    rhs = keys % max_rhs
    rest = keys // max_rhs
    return np.stack([rest // num_rel, rest % num_rel, rhs], axis=1)


def _write_parquet(path: Path, edges: np.ndarray) -> None:
    table = pa.Table.from_arrays([pa.array(edges[:, i], pa.int64()) for i in range(3)], schema=EDGE_SCHEMA)
    pq.write_table(table, path, row_group_size=1 << 17)


def generate(
    cfg: Config,
    out_dir: str | os.PathLike[str],
    num_edges: int = DEFAULT_EDGES,
    seed: int = 0,
    *,
    num_test_edges: int = DEFAULT_TEST_EDGES,
    overwrite: bool = False,
    params: SynthParams | None = None,
) -> SynthResult:
    """Write ``out_dir/edges/part-*.parquet`` (``num_edges`` rows) and ``out_dir/test/`` atomically.

    The same ``cfg`` tables/relations, ``num_edges`` and ``seed`` always give the same rows.
    """
    p = params or SynthParams()
    if num_edges <= 0 or num_test_edges < 0:
        raise SynthError(f"edge counts must be positive, got {num_edges} and {num_test_edges}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise SynthError(f"{out} already exists (pass --overwrite to replace it)")
    sizes = _table_sizes(cfg)
    rng = np.random.default_rng(seed)
    rels = cfg.model.relations
    rhs_tables = {r.rhs for r in rels}
    lhs_tables = {r.lhs for r in rels}
    kinds = max(2, len(rels))
    latent: dict[str, Latent] = {}
    for t in cfg.model.embeddings.tables:  # config order: the draw sequence is part of the seed contract
        exponent = p.activity_exponent if t.name in lhs_tables else p.popularity_exponent
        latent[t.name] = _make_latent(sizes[t.name], kinds, exponent, p, rng)
    samplers = {name: _CellSampler(latent[name], p.num_communities, kinds) for name in sorted(rhs_tables)}
    edges = _unique_edges(
        num_edges + num_test_edges, cfg, sizes, lambda n: _sample_edges(n, cfg, latent, samplers, kinds, p, rng), rng
    )
    main, test = edges[:num_edges], edges[num_edges:]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "edges").mkdir(parents=True)
        parts = max(1, min(p.num_parts, num_edges))
        for i, chunk in enumerate(np.array_split(main, parts)):
            _write_parquet(tmp / "edges" / f"part-{i:05d}.parquet", chunk)
        if num_test_edges:
            (tmp / "test").mkdir()
            _write_parquet(tmp / "test" / "part-00000.parquet", test)
        counts = np.bincount(main[:, 1], minlength=len(rels)).tolist()
        meta = {
            "generator": "tbg synth",
            "seed": seed,
            "num_edges": num_edges,
            "num_test_edges": num_test_edges,
            "tables": sizes,
            "relations": [{"name": r.name, "lhs": r.lhs, "rhs": r.rhs, "edges": c} for r, c in zip(rels, counts)],
            "params": p.__dict__,
            "kinds": kinds,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SynthResult(out, num_edges, num_test_edges, counts, latent, kinds)


# ----------------------------------------------------------------------------- CLI


def _default_out(cfg: Config) -> Path | None:
    """``a/b/edges/*.parquet`` -> ``a/b``: the directory the config's train ``data_root`` reads from."""
    root = cfg.train_data.data_root
    if "://" in root:
        return None
    parent = Path(root).parent
    return parent.parent if parent.name == "edges" else None


def _default_edges(cfg: Config) -> int:
    """Rows the config reads from the main source: the end of the furthest limit/offset window."""
    ends = [
        (d.offset or 0) + d.limit
        for d in (cfg.train_data, cfg.validation_data)
        if d.limit is not None and d.data_root == cfg.train_data.data_root
    ]
    return max(ends) if ends else DEFAULT_EDGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", help="output dir (default: from train_data.data_root, e.g. data/x for data/x/edges/*.parquet)"
    )
    parser.add_argument(
        "--edges",
        type=int,
        help=f"edges in the main split (default: the rows the config's limit/offset read, else {DEFAULT_EDGES:,})",
    )
    parser.add_argument(
        "--test-edges",
        type=int,
        help=f"edges in the separate test split (default: test_data.limit, else {DEFAULT_TEST_EDGES:,})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dir atomically")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else _default_out(cfg)
    if out is None:
        raise SynthError(f"cannot derive an output dir from data_root {cfg.train_data.data_root!r}; pass --out")
    num_edges = args.edges if args.edges is not None else _default_edges(cfg)
    num_test = args.test_edges
    if num_test is None:
        num_test = cfg.test_data.limit if cfg.test_data and cfg.test_data.limit else DEFAULT_TEST_EDGES
    start = time.perf_counter()
    res = generate(cfg, out, num_edges, args.seed, num_test_edges=num_test, overwrite=args.overwrite)
    wall = time.perf_counter() - start
    print(
        f"wrote {res.num_edges:,} edges (+{res.num_test_edges:,} test) to {res.out_dir} in {wall:.1f}s", file=sys.stderr
    )
    for r, c in zip(cfg.model.relations, res.relation_counts):
        print(f"  {r.name:<16} {r.lhs}->{r.rhs}  {c:>10,}", file=sys.stderr)
    return 0

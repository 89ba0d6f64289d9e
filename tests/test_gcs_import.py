"""gs:// import end to end against the real fake-gcs-server: Parquet and TSV sources, TwHIN-style glob."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import random_index_edges, twhin_config
from readback import graph_multiset, source_multiset

from tbg.graph import Graph
from tbg.importer import import_graph

RELS = [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("retweet", "user", "tweet")]
SIZES = {"user": 60, "tweet": 40}


@pytest.fixture(scope="module")
def gcs(fake_gcs: str):
    import gcsfs

    fs = gcsfs.GCSFileSystem(endpoint_url=fake_gcs, token="anon")
    fs.mkdir("follows_tml_01")
    return fs


def _parquet_bytes(cols: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf, row_group_size=700)
    return buf.getvalue()


def test_gcs_parquet_twhin_glob(gcs, tmp_path) -> None:
    edges = random_index_edges(4000, 11, SIZES, RELS)
    cols = {k: edges[k] for k in ("lhs", "rel", "rhs")}
    prefix = "follows_tml_01/tweet_eng/2023-01-23/large/edges"
    for k, sl in enumerate((slice(0, 1500), slice(1500, 4000))):
        gcs.pipe(f"{prefix}/part-{k:05d}.parquet", _parquet_bytes({c: v[sl] for c, v in cols.items()}))
    root = f"gs://{prefix}/*"
    cfg = twhin_config(
        tmp_path / "g",
        train=root,
        valid=root,
        types={n: (c, 4, 1) for n, c in SIZES.items()},
        relations=RELS,
        partitions=2,
        overrides={"train_data.limit": 3990, "validation_data.offset": 3990, "validation_data.limit": 10},
    )
    summary = import_graph(cfg, progress=False)
    assert summary.splits == {"train": 3990, "valid": 10}
    g = Graph(str(tmp_path / "g"))
    for split, sl in (("train", slice(0, 3990)), ("valid", slice(3990, 4000))):
        assert graph_multiset(g, split) == source_multiset(cols["lhs"][sl], cols["rel"][sl], cols["rhs"][sl])
    sources = g.split_info("valid")["sources"]
    assert [s["path"] for s in sources] == [f"gs://{prefix}/part-00000.parquet", f"gs://{prefix}/part-00001.parquet"]
    assert [s["rows"] for s in sources] == [0, 10]


def test_gcs_tsv_names(gcs, tmp_path) -> None:
    rng = np.random.default_rng(3)
    n = 1200
    rel = rng.integers(0, 3, n)
    lhs = np.array([f"@u{k}" for k in rng.integers(0, 70, n)])
    rhs = np.array([f"tw{k}" for k in rng.integers(0, 45, n)])
    names = np.array([r[0] for r in RELS])[rel]
    lines = [f"{a}\t{r}\t{b}" for a, r, b in zip(lhs, names, rhs)]
    gcs.pipe("follows_tml_01/tsv/a.tsv", ("\n".join(lines[:600]) + "\n").encode())
    gcs.pipe("follows_tml_01/tsv/b.tsv", ("\n".join(lines[600:]) + "\n").encode())
    cfg = twhin_config(
        tmp_path / "g",
        train="gs://follows_tml_01/tsv/*.tsv",
        valid="gs://follows_tml_01/tsv/b.tsv",
        types={"user": (None, 4, 1), "tweet": (None, 4, 1)},
        relations=RELS,
        partitions=3,
        overrides={
            "graph.id_mode": "names",
            "graph.columns": {"lhs": 0, "rel": 1, "rhs": 2},
            "validation_data.offset": 500,
        },
    )
    import_graph(cfg, progress=False)
    g = Graph(str(tmp_path / "g"))
    assert graph_multiset(g, "train", names=True) == source_multiset(lhs, rel, rhs)
    assert graph_multiset(g, "valid", names=True) == source_multiset(lhs[1100:], rel[1100:], rhs[1100:])
    assert sum(Counter(g.names("user")).values()) == len(set(lhs))

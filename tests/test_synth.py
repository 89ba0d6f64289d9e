"""`tbg synth`: seeded, TwHIN's Parquet edge format, ids in range, relation-specific structure, atomic output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from builders import child_env

from tbg import synth
from tbg.cli import main as cli_main
from tbg.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def small_config(users: int = 5000, tweets: int = 2000) -> Config:
    """configs/local.yaml's tables and relations, scaled down so tests run in well under a second."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    sizes = {"user": users, "tweet": tweets}
    for table in data["model"]["embeddings"]["tables"]:
        table["num_embeddings"] = sizes[table["name"]]
    return parse_config(data)


def read_edges(path: Path) -> np.ndarray:
    table = pq.read_table(path)
    return np.stack([table[c].to_numpy() for c in ("lhs", "rel", "rhs")], axis=1)


def read_split(out: Path, split: str) -> np.ndarray:
    files = sorted((out / split).glob("*.parquet"))
    return np.concatenate([read_edges(f) for f in files])


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, synth.SynthResult]:
    cfg = small_config()
    out = tmp_path_factory.mktemp("synth") / "sample"
    return cfg, synth.generate(cfg, out, 60_000, seed=3, num_test_edges=2_000)


def test_layout_and_parquet_schema(sample: tuple[Config, synth.SynthResult]) -> None:
    _, res = sample
    parts = sorted((res.out_dir / "edges").glob("*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(4)]
    assert [p.name for p in (res.out_dir / "test").iterdir()] == ["part-00000.parquet"]
    for path in parts:
        schema = pq.read_schema(path)
        assert schema.names == ["lhs", "rel", "rhs"]
        assert all(schema.field(c).type == pa.int64() for c in schema.names)
        assert not any(schema.field(c).nullable and pq.read_table(path)[c].null_count for c in schema.names)
    assert sum(pq.read_metadata(p).num_rows for p in parts) == 60_000
    assert not list(res.out_dir.parent.glob(".sample.tmp-*"))  # temp dir renamed away


def test_ids_in_range_and_edges_distinct(sample: tuple[Config, synth.SynthResult]) -> None:
    cfg, res = sample
    main, test = read_split(res.out_dir, "edges"), read_split(res.out_dir, "test")
    assert main.shape == (60_000, 3) and test.shape == (2_000, 3)
    everything = np.concatenate([main, test])
    for r, rel in enumerate(cfg.model.relations):
        rows = everything[everything[:, 1] == r]
        assert len(rows) > 0
        assert rows[:, 0].min() >= 0 and rows[:, 0].max() < cfg.model.table(rel.lhs).num_embeddings
        assert rows[:, 2].min() >= 0 and rows[:, 2].max() < cfg.model.table(rel.rhs).num_embeddings
    assert set(np.unique(everything[:, 1])) == {0, 1, 2, 3}
    assert len(np.unique(everything, axis=0)) == len(everything)  # deduplicated; test disjoint from main
    assert res.relation_counts == np.bincount(main[:, 1], minlength=4).tolist()
    assert res.relation_counts == sorted(res.relation_counts, reverse=True)  # fav most common


def test_seeded_determinism(tmp_path: Path) -> None:
    cfg = small_config()
    a = synth.generate(cfg, tmp_path / "a", 20_000, seed=11, num_test_edges=500)
    b = synth.generate(cfg, tmp_path / "b", 20_000, seed=11, num_test_edges=500)
    c = synth.generate(cfg, tmp_path / "c", 20_000, seed=12, num_test_edges=500)
    for split in ("edges", "test"):
        assert np.array_equal(read_split(a.out_dir, split), read_split(b.out_dir, split))
    assert not np.array_equal(read_split(a.out_dir, "edges"), read_split(c.out_dir, "edges"))
    for f in (a.out_dir / "edges").iterdir():  # byte-identical files, not just equal rows
        assert f.read_bytes() == (b.out_dir / "edges" / f.name).read_bytes()


def test_zipf_activity_and_popularity(sample: tuple[Config, synth.SynthResult]) -> None:
    _, res = sample
    main = read_split(res.out_dir, "edges")
    for column in (0, 2):
        degree = np.sort(np.bincount(main[:, column]))[::-1]
        top = degree[: len(degree) // 10].sum() / degree.sum()
        assert top > 0.3, top  # the top 10% of entities carry over 3x their share of the edges
        assert np.median(degree) < degree[0] / 10  # and a long tail


def test_edges_follow_communities(sample: tuple[Config, synth.SynthResult]) -> None:
    _, res = sample
    users, tweets = res.latent["user"], res.latent["tweet"]
    main = read_split(res.out_dir, "edges")
    u, t = main[:, 0], main[:, 2]

    def share_a_community(users_of: np.ndarray, tweets_of: np.ndarray) -> np.ndarray:
        user_coms = (users.primary[users_of], np.where(users.secondary[users_of] >= 0, users.secondary[users_of], -2))
        out = np.zeros(len(users_of), dtype=bool)
        for a in user_coms:
            for b in (tweets.primary[tweets_of], tweets.secondary[tweets_of]):
                out |= a == b
        return out

    within = share_a_community(u, t).mean()
    chance = share_a_community(u, np.random.default_rng(0).permutation(t)).mean()
    assert chance < 0.2 and within > 0.7 and within > 4 * chance, (within, chance)


def test_relations_prefer_different_tweets(sample: tuple[Config, synth.SynthResult]) -> None:
    """Relation r draws mostly tweets of kind r, so per-relation tweet distributions differ clearly."""
    _, res = sample
    main = read_split(res.out_dir, "edges")
    kind = res.latent["tweet"].kind[main[:, 2]]
    for r in range(4):
        share = np.bincount(kind[main[:, 1] == r], minlength=res.kinds) / (main[:, 1] == r).sum()
        assert share.argmax() == r and share[r] > 0.75, share
    # without the latent kinds: rhs histograms of two relations differ far more than two halves of one relation
    hist = {r: np.bincount(main[main[:, 1] == r, 2], minlength=2000) for r in range(4)}

    def tv(a: np.ndarray, b: np.ndarray) -> float:
        return 0.5 * np.abs(a / a.sum() - b / b.sum()).sum()

    fav = main[main[:, 1] == 0, 2]
    halves = tv(np.bincount(fav[::2], minlength=2000), np.bincount(fav[1::2], minlength=2000))
    assert tv(hist[0], hist[1]) > halves + 0.3


def test_relation_aware_ranking_beats_relation_blind(sample: tuple[Config, synth.SynthResult]) -> None:
    """A scorer that knows the relation ranks held-out tweets better than one that ignores it.

    Scorer: P(tweet | user's communities, relation) estimated from train counts per (community, relation);
    the blind scorer pools the relations.  This is what a model that ignores the relation loses.
    """
    _, res = sample
    users = res.latent["user"]
    main, test = read_split(res.out_dir, "edges"), read_split(res.out_dir, "test")
    num_tweets, k = 2000, int(users.primary.max()) + 1
    counts = np.zeros((k, 4, num_tweets))
    np.add.at(counts, (users.primary[main[:, 0]], main[:, 1], main[:, 2]), 1.0)
    aware = counts[users.primary[test[:, 0]], test[:, 1]]  # (n, tweets)
    blind = counts.sum(1)[users.primary[test[:, 0]]]

    def mrr(scores: np.ndarray) -> float:
        pos = scores[np.arange(len(test)), test[:, 2]]
        return float(np.mean(1.0 / (1 + (scores > pos[:, None]).sum(1))))

    assert mrr(aware) > 1.2 * mrr(blind), (mrr(aware), mrr(blind))


def test_existing_output_is_refused_then_replaced(tmp_path: Path) -> None:
    cfg = small_config()
    out = tmp_path / "s"
    synth.generate(cfg, out, 5_000, seed=1, num_test_edges=0)
    assert not (out / "test").exists()
    with pytest.raises(synth.SynthError, match="already exists"):
        synth.generate(cfg, out, 5_000, seed=2)
    (out / "stale.txt").write_text("x")
    synth.generate(cfg, out, 6_000, seed=2, num_test_edges=100, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert len(read_split(out, "edges")) == 6_000 and len(read_split(out, "test")) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp or trash dirs left


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small_config()
    calls = []

    def broken(path: Path, edges: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        pq.write_table(pa.table({"lhs": edges[:, 0]}), path)

    monkeypatch.setattr(synth, "_write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        synth.generate(cfg, tmp_path / "s", 5_000, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests(tmp_path: Path) -> None:
    cfg = small_config(users=30, tweets=20)
    with pytest.raises(synth.SynthError, match="distinct"):
        synth.generate(cfg, tmp_path / "s", 5_000, seed=0)
    with pytest.raises(synth.SynthError, match="positive"):
        synth.generate(cfg, tmp_path / "s", 0, seed=0)
    data = yaml.safe_load((ROOT / "configs" / "wordnet.yaml").read_text())
    with pytest.raises(synth.SynthError, match=r"tables\[0\]\.num_embeddings: synth needs every table sized"):
        synth.generate(parse_config(data), tmp_path / "w", 100, seed=0)


def test_tiny_tables_still_work(tmp_path: Path) -> None:
    """Empty (community, kind) cells fall back to popularity sampling instead of failing."""
    cfg = small_config(users=50, tweets=7)
    res = synth.generate(cfg, tmp_path / "s", 300, seed=0, num_test_edges=10)
    main = read_split(res.out_dir, "edges")
    assert main[:, 2].max() < 7 and len(np.unique(main, axis=0)) == 300


def test_cli_defaults_follow_the_config(tmp_path: Path) -> None:
    """`tbg synth CONFIG` writes where data_root reads, exactly the rows limit/offset cover."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    for table in data["model"]["embeddings"]["tables"]:
        table["num_embeddings"] //= 100
    for split in ("train_data", "validation_data"):
        data[split]["data_root"] = str(tmp_path / "sample" / "edges" / "*.parquet")
    data["train_data"]["limit"], data["validation_data"]["limit"], data["validation_data"]["offset"] = 900, 100, 900
    data["test_data"]["limit"] = 50
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["synth", str(path)]) == 0
    assert len(read_split(tmp_path / "sample", "edges")) == 1000
    assert len(read_split(tmp_path / "sample", "test")) == 50


def test_cli_end_to_end_without_torch(tmp_path: Path) -> None:
    """The console command works and never imports torch (start-up time)."""
    code = (
        "import sys; from tbg.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    cfg = tmp_path / "c.yaml"
    data: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    for table in data["model"]["embeddings"]["tables"]:
        table["num_embeddings"] //= 100
    cfg.write_text(yaml.safe_dump(data))
    out = tmp_path / "o"
    argv = ["synth", str(cfg), "--out", str(out), "--edges", "2000", "--test-edges", "10", "--seed", "5"]
    run = {"capture_output": True, "text": True, "env": child_env(), "cwd": tmp_path}
    proc = subprocess.run([sys.executable, "-c", code, *argv], **run)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2,000 edges (+10 test)" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", code, *argv], **run)
    assert proc.returncode == 2 and "already exists" in proc.stderr and proc.stderr.count("\n") == 1

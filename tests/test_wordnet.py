"""tools/build_wordnet.py: parsing, the 27 pointer types, the split rule, and its agreement with the configs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tbg.config import load_config

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_wordnet", ROOT / "tools" / "build_wordnet.py")
assert spec is not None and spec.loader is not None
bw = importlib.util.module_from_spec(spec)
sys.modules["build_wordnet"] = bw
spec.loader.exec_module(bw)

# Three synsets in WordNet's data-file format: offset lex_filenum ss_type w_cnt(hex) words p_cnt pointers | gloss
NOUN = (
    "  1 licence header line\n"
    "00000001 03 n 01 thing 0 002 ~ 00000002 n 0000 + 00000003 v 0101 | a thing\n"
    "00000002 03 n 02 cat 0 feline 0 002 @ 00000001 n 0000 @ 00000001 n 0000 | a cat\n"
)
VERB = "00000003 29 v 01 make 0 001 + 00000001 n 0101 00 | to make\n"
ADJ = (
    "00000004 00 a 01 hot 0 002 & 00000005 s 0000 \\ 00000001 n 0101 | hot\n"
    "00000005 00 s 0a torrid 0 warm 0 x 0 y 0 z 0 q 0 w 0 e 0 r 0 t 0 001 & 00000004 a 0000 | torrid\n"
)
ADV = "00000006 02 r 01 hotly 0 001 \\ 00000004 a 0101 | hotly\n"


def write_fake_wordnet(tmp_path: Path) -> Path:
    for pos, text in (("noun", NOUN), ("verb", VERB), ("adj", ADJ), ("adv", ADV)):
        (tmp_path / f"data.{pos}").write_text(text)
    return tmp_path


def test_relation_table_matches_configs() -> None:
    """configs/wordnet*.yaml list exactly the builder's 27 relation names, in the same order."""
    assert len(bw.RELATIONS) == 27
    for name in ("wordnet.yaml", "wordnet_p4.yaml", "wordnet_short.yaml"):
        cfg = load_config(str(ROOT / "configs" / name))
        assert [r.name for r in cfg.model.relations] == list(bw.RELATIONS)


def test_typed_config_relations_are_typed_by_pos() -> None:
    """configs/wordnet_typed.yaml: tables n/v/a/r; relation `<symbol>:<lhs pos><rhs pos>` joins those tables."""
    cfg = load_config(str(ROOT / "configs" / "wordnet_typed.yaml"))
    assert [t.name for t in cfg.model.embeddings.tables] == list(bw.POS_TABLES)
    for rel in cfg.model.relations:
        symbol, pair = rel.name.rsplit(":", 1)
        assert symbol in bw.RELATIONS and (rel.lhs, rel.rhs) == (pair[0], pair[1])


def test_parse_lifts_pointers_to_synsets(tmp_path: Path) -> None:
    wn = write_fake_wordnet(tmp_path)
    assert bw.parse_data_file(wn / "data.noun") == [
        ("00000001.n", "~", "00000002.n"),
        ("00000001.n", "+", "00000003.v"),  # lexical pointer, kept as a synset edge
        ("00000002.n", "@", "00000001.n"),
        ("00000002.n", "@", "00000001.n"),  # duplicate: removed later by build()
    ]
    # satellites are named .a; w_cnt is hexadecimal (0a = 10 words)
    assert bw.parse_data_file(wn / "data.adj") == [
        ("00000004.a", "&", "00000005.a"),
        ("00000004.a", "\\", "00000001.n"),
        ("00000005.a", "&", "00000004.a"),
    ]
    # the adverb's backslash is the "derived from adjective" type
    assert bw.parse_data_file(wn / "data.adv") == [("00000006.r", "\\r", "00000004.a")]


def test_unknown_pointer_symbol_fails(tmp_path: Path) -> None:
    (tmp_path / "data.noun").write_text("00000001 03 n 01 x 0 001 ?? 00000002 n 0000 | x\n")
    with pytest.raises(ValueError, match=r"unknown pointer symbol '\?\?'"):
        bw.parse_data_file(tmp_path / "data.noun")


def test_build_small(tmp_path: Path) -> None:
    (tmp_path / "wn").mkdir()
    wn = write_fake_wordnet(tmp_path / "wn")
    counts = bw.build(str(wn), str(tmp_path / "out"), num_valid=1, num_test=1, seed=0)
    assert counts["pointers"] == 9 and counts["edges"] == 8
    lines = {s: (tmp_path / "out" / f"{s}.tsv").read_text().splitlines() for s in ("train", "valid", "test")}
    assert (len(lines["train"]), len(lines["valid"]), len(lines["test"])) == (6, 1, 1)
    rows = [tuple(line.split("\t")) for split in lines.values() for line in split]
    assert len(set(rows)) == 8 and all(len(r) == 3 for r in rows)
    train_entities = {e for lhs, _, rhs in map(lambda s: s.split("\t"), lines["train"]) for e in (lhs, rhs)}
    for split in ("valid", "test"):
        lhs, rel, rhs = lines[split][0].split("\t")
        assert lhs in train_entities and rhs in train_entities
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_build_typed_keeps_the_split(tmp_path: Path) -> None:
    """--typed writes the same edges and split with relations split by (lhs pos, rhs pos)."""
    (tmp_path / "wn").mkdir()
    wn = write_fake_wordnet(tmp_path / "wn")
    counts = bw.build(str(wn), str(tmp_path / "out"), num_valid=1, num_test=1, seed=0, typed_dir=str(tmp_path / "t"))
    # ~:nn @:nn +:nv +:vn &:aa \\:an \\r:ra (the split protects untyped relations only: one may miss train)
    assert counts["typed_relations"] == 7 and counts["typed_relations_in_train"] <= 7
    for split in ("train", "valid", "test"):
        plain = [line.split("\t") for line in (tmp_path / "out" / f"{split}.tsv").read_text().splitlines()]
        typed = [line.split("\t") for line in (tmp_path / "t" / f"{split}.tsv").read_text().splitlines()]
        assert [(a, c) for a, _, c in plain] == [(a, c) for a, _, c in typed]
        for (lhs, rel, rhs), (_, trel, _) in zip(plain, typed):
            assert trel == f"{rel}:{lhs[-1]}{rhs[-1]}"
    yaml_block = bw.typed_config_relations(["+:nv"])
    assert "lhs: n, rhs: v" in yaml_block and "derivationally related form" in yaml_block


def test_split_keeps_held_out_entities_and_relations_in_train() -> None:
    rng = np.random.default_rng(0)
    edges = np.unique(
        np.stack([rng.integers(0, 300, 3000), rng.integers(0, 5, 3000), rng.integers(0, 300, 3000)], 1), axis=0
    )
    edges = np.concatenate([edges, [[1000, 5, 1001]]])  # a relation and entities seen only once
    train, valid, test = bw.split_edges(edges, 200, 300, seed=4)
    assert (len(valid), len(test), len(train)) == (200, 300, len(edges) - 500)
    assert len(np.unique(np.concatenate([train, valid, test]), axis=0)) == len(edges)
    seen = set(train[:, 0]) | set(train[:, 2])
    for held in (valid, test):
        assert set(held[:, 0]) <= seen and set(held[:, 2]) <= seen and set(held[:, 1]) <= set(train[:, 1])
    assert [1000, 5, 1001] in train.tolist()
    again = bw.split_edges(edges, 200, 300, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, valid, test), again))


@pytest.mark.skipif(not Path(bw.WORDNET_DIR, "data.noun").exists(), reason="Debian's wordnet-base not installed")
def test_real_wordnet_counts(tmp_path: Path) -> None:
    counts = bw.build(bw.WORDNET_DIR, str(tmp_path), seed=0)
    assert counts == {
        "pointers": 377_592,
        "edges": 364_552,
        "entities": 116_650,
        "relations": 27,
        "train": 354_552,
        "valid": 5_000,
        "test": 5_000,
        "seed": 0,
    }

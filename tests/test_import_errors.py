"""Every bad input gives one clear error naming file/row/column, and leaves no graph dir and no temp dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import child_env, twhin_config, write_parquet, write_tsv

from tbg.config import ConfigError
from tbg.errors import InputError
from tbg.importer import import_graph

POS = {"lhs": 0, "rel": 1, "rhs": 2}


def _expect_error(tmp_path: Path, cfg, pattern: str, exc: type[Exception] = InputError) -> str:
    with pytest.raises(exc, match=pattern) as info:
        import_graph(cfg, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert not (tmp_path / "g").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("g.")] == []
    return message


def _tsv_config(tmp_path: Path, rows: list[tuple], **graph) -> object:
    write_tsv(tmp_path / "e.tsv", rows)
    g = {"columns": POS, **graph}
    return twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.tsv"),
        valid=str(tmp_path / "e.tsv"),
        overrides={f"graph.{k}": v for k, v in g.items()},
    )


def test_short_row_names_file_and_row(tmp_path: Path) -> None:
    rows = [(1, 0, 2)] * 1233 + [(1, 0)] + [(1, 0, 2)] * 10
    msg = _expect_error(tmp_path, _tsv_config(tmp_path, rows), r"e\.tsv row 1234: expected 3 columns, got 2")
    assert str(tmp_path / "e.tsv") in msg


def test_short_row_with_header(tmp_path: Path) -> None:
    write_tsv(tmp_path / "e.tsv", [(1, 0, 2), (3, 0)], header=["lhs", "rel", "rhs"])
    cfg = twhin_config(
        tmp_path / "g", train=str(tmp_path / "e.tsv"), valid=str(tmp_path / "e.tsv"), overrides={"graph.header": True}
    )
    _expect_error(tmp_path, cfg, r"row 2: expected 3 columns, got 2")


def test_missing_column_parquet(tmp_path: Path) -> None:
    write_parquet(tmp_path / "e.parquet", {"a": [1], "rel": [0], "b": [2]})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    _expect_error(tmp_path, cfg, r"e\.parquet: column 'lhs' not found \(columns: a, rel, b\)")


def test_missing_column_tsv_header_and_position(tmp_path: Path) -> None:
    write_tsv(tmp_path / "e.tsv", [(1, 0, 2)], header=["src", "rel", "dst"])
    cfg = twhin_config(
        tmp_path / "g", train=str(tmp_path / "e.tsv"), valid=str(tmp_path / "e.tsv"), overrides={"graph.header": True}
    )
    _expect_error(tmp_path, cfg, r"column 'lhs' not found \(columns: src, rel, dst\)")
    cfg = _tsv_config(tmp_path, [(1, 0, 2)], columns={"lhs": 0, "rel": 1, "rhs": 5})
    _expect_error(tmp_path, cfg, r"e\.tsv: column .*position 5.* out of range")


def test_non_integer_id_tsv(tmp_path: Path) -> None:
    rows = [(1, 0, 2)] * 4 + [(1, 0, "x7")]
    _expect_error(tmp_path, _tsv_config(tmp_path, rows), r"e\.tsv row 5: column 'rhs'.*x7")


def test_float_ids_parquet(tmp_path: Path) -> None:
    write_parquet(tmp_path / "e.parquet", {"lhs": [1.0, 2.5], "rel": [0, 0], "rhs": [1, 2]})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    _expect_error(tmp_path, cfg, r"column 'lhs' has type double; id_mode indices needs integer ids")


def test_negative_id(tmp_path: Path) -> None:
    write_parquet(tmp_path / "e.parquet", {"lhs": [1, 2, -3], "rel": [0, 0, 0], "rhs": [1, 2, 3]})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    _expect_error(tmp_path, cfg, r"e\.parquet row 3: column 'lhs': negative id -3")


def test_id_out_of_range_names_table(tmp_path: Path) -> None:
    rows = [(1, 0, 2), (1, 2, 49), (1, 0, 30)]  # follow: user->user (50 ok), fav: user->tweet (30 too big)
    msg = _expect_error(tmp_path, _tsv_config(tmp_path, rows), r"row 3: column 'rhs': id 30 out of range")
    assert "table 'tweet'" in msg and "num_embeddings 30" in msg


def test_unknown_relation_name_and_index(tmp_path: Path) -> None:
    cfg = _tsv_config(tmp_path, [(1, "fav", 2), (1, "likes", 2)])
    _expect_error(tmp_path, cfg, r"row 2: column 'rel': unknown relation 'likes' \(relations: fav, reply, follow\)")
    cfg = _tsv_config(tmp_path, [(1, 0, 2), (1, 1, 2), (1, 7, 2)])
    _expect_error(tmp_path, cfg, r"row 3: column 'rel': unknown relation index 7")
    write_parquet(tmp_path / "e.parquet", {"lhs": [1, 1], "rel": [0, 3], "rhs": [1, 2]})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    _expect_error(tmp_path, cfg, r"e\.parquet row 2: column 'rel': unknown relation index 3")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "heavy"])
def test_bad_weights(tmp_path: Path, bad: str) -> None:
    rows = [(1, 0, 2, 0.5), (1, 0, 2, bad)]
    cfg = _tsv_config(tmp_path, rows, columns={**POS, "weight": 3})
    _expect_error(
        tmp_path,
        cfg,
        r"row 2: column 'weight'.*: (weight .* is not finite|cannot parse as double: invalid value 'heavy')",
    )


def test_nan_weight_parquet(tmp_path: Path) -> None:
    cols = {"lhs": [1, 2], "rel": [0, 0], "rhs": [1, 2], "w": np.array([1.0, np.nan], np.float32)}
    write_parquet(tmp_path / "e.parquet", cols)
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.parquet"),
        valid=str(tmp_path / "e.parquet"),
        overrides={"graph.columns": {"lhs": "lhs", "rel": "rel", "rhs": "rhs", "weight": "w"}},
    )
    _expect_error(tmp_path, cfg, r"row 2: column 'weight': weight nan is not finite")


def test_missing_value(tmp_path: Path) -> None:
    write_parquet(tmp_path / "e.parquet", {"lhs": [1, None], "rel": [0, 0], "rhs": [1, 2]})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    _expect_error(tmp_path, cfg, r"row 2: column 'lhs': missing value")


def test_empty_glob_and_missing_file(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing" / "*.parquet")
    cfg = twhin_config(tmp_path / "g", train=pattern, valid=pattern)
    _expect_error(tmp_path, cfg, r"nothing/\*\.parquet: no files match this pattern")
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "nope.tsv"), valid=str(tmp_path / "nope.tsv"))
    _expect_error(tmp_path, cfg, r"nope\.tsv: file not found")


def test_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "e.parquet").write_bytes(b"PAR1 this is not really parquet")
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    _expect_error(tmp_path, cfg, r"e\.parquet: not a readable Parquet file: ")


def test_truncated_parquet(tmp_path: Path) -> None:
    write_parquet(
        tmp_path / "e.parquet", {"lhs": np.arange(1000) % 50, "rel": np.zeros(1000, int), "rhs": np.arange(1000) % 30}
    )
    data = (tmp_path / "e.parquet").read_bytes()
    (tmp_path / "e.parquet").write_bytes(data[:100] + data[-200:])
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "e.parquet"), valid=str(tmp_path / "e.parquet"))
    _expect_error(tmp_path, cfg, r"e\.parquet: not a readable Parquet file")


def test_names_mode_more_entities_than_num_embeddings(tmp_path: Path) -> None:
    write_tsv(tmp_path / "e.tsv", [("a", "fav", "t1"), ("b", "fav", "t2"), ("c", "fav", "t3")])
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.tsv"),
        valid=str(tmp_path / "e.tsv"),
        types={"user": (2, 4, 1), "tweet": (None, 4, 1)},
        overrides={"graph.id_mode": "names", "graph.columns": POS},
    )
    _expect_error(tmp_path, cfg, r"table 'user' has more than num_embeddings=2 distinct entities")


def test_relation_by_name_rejects_integers(tmp_path: Path) -> None:
    write_parquet(tmp_path / "e.parquet", {"lhs": [1], "rel": [0], "rhs": [1]})
    cfg = twhin_config(
        tmp_path / "g",
        train=str(tmp_path / "e.parquet"),
        valid=str(tmp_path / "e.parquet"),
        overrides={"graph.relation_by": "name"},
    )
    _expect_error(tmp_path, cfg, r"holds integers but graph.relation_by is 'name'")


def test_config_typo_via_cli(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "model:\n  embeddings:\n"
        "    tables: [{name: u, num_embeddings: 3, embedding_dim: 2, optimizer: {sgd: {lr: 1}}}]\n"
        "  relations: [{name: r, lhs: u, rhs: u, operater: translation}]\n"
        "  translation_optimizer: {sgd: {lr: 1}}\n"
        "train_data: {data_root: x.parquet}\nvalidation_data: {data_root: x.parquet}\n"
        f"graph: {{dir: {tmp_path / 'g'}}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tbg", "import", str(tmp_path / "c.yaml")],
        capture_output=True, text=True, env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"tbg import: error: {tmp_path / 'c.yaml'}: model.relations[0].operater: unknown key"
    assert not (tmp_path / "g").exists()


def test_failure_mid_import_leaves_nothing(tmp_path: Path) -> None:
    """A bad row in the validation split, after train was fully written, still leaves no dir."""
    write_parquet(
        tmp_path / "t.parquet", {"lhs": np.arange(500) % 50, "rel": np.zeros(500, int), "rhs": np.arange(500) % 30}
    )
    write_parquet(tmp_path / "v.parquet", {"lhs": [1, 99], "rel": [0, 0], "rhs": [1, 2]})
    cfg = twhin_config(tmp_path / "g", train=str(tmp_path / "t.parquet"), valid=str(tmp_path / "v.parquet"))
    _expect_error(tmp_path, cfg, r"v\.parquet row 2: column 'lhs': id 99 out of range for table 'user'")


def test_config_error_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        twhin_config(tmp_path / "g", train="x", valid="x", overrides={"graph.id_mode": "nmaes"})

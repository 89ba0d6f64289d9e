"""Bad configs and graph/config mismatches fail with one line naming the key, never a traceback."""

from __future__ import annotations

import pytest
from builders import NODE_RELATIONS, make_config, planted_graph

from tbg.cli import main
from tbg.config import dump_config


@pytest.fixture(scope="module")
def gdir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("g") / "graph")
    planted_graph(make_config(path, partitions=2), edges=1000)
    return path


def _cli(tmp_path, capsys, cfg_text: str) -> tuple[int, str]:
    path = tmp_path / "c.yaml"
    path.write_text(cfg_text)
    rc = main(["train", str(path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    return rc, err


def _yaml(tmp_path, gdir, **over) -> str:
    return dump_config(make_config(gdir, save_dir=str(tmp_path / "run"), partitions=2, overrides=over))


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"partitions": 1}, "model.embeddings.tables[0].num_partitions: 1 but the graph"),
        ({"types": {"node": (300, 16, 2)}}, "model.embeddings.tables[0].num_embeddings: 300 but the graph"),
        ({"relations": NODE_RELATIONS[:2]}, "model.relations: the config has 2 relations"),
    ],
)
def test_graph_mismatch_one_line(tmp_path, capsys, gdir, change, expect) -> None:
    text = dump_config(make_config(gdir, save_dir=str(tmp_path / "run"), **{"partitions": 2, **change}))
    rc, err = _cli(tmp_path, capsys, text)
    assert rc == 2 and len(err.splitlines()) == 1 and expect in err, err


def test_missing_graph_says_import_first(tmp_path, capsys) -> None:
    rc, err = _cli(tmp_path, capsys, _yaml(tmp_path, str(tmp_path / "nothing")))
    assert rc == 2 and len(err.splitlines()) == 1 and "run `tbg import` first" in err


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("bucket_order: buffer", "bucket_order: diagonal", "training.bucket_order: must be one of"),
        ("cpu_bf16: auto", "cpu_bf16: maybe", "runtime.cpu_bf16: must be one of auto, on, off"),
        ("per_replica_batch_size: 100", "per_replica_batch_size: 0", "per_replica_batch_size: must be > 0"),
        ("loss: softmax", "loss: hinge", "model.loss: must be one of"),
    ],
)
def test_bad_values_one_line(tmp_path, capsys, gdir, old, new, expect) -> None:
    text = _yaml(tmp_path, gdir)
    assert old in text
    rc, err = _cli(tmp_path, capsys, text.replace(old, new, 1))
    assert rc == 2 and len(err.splitlines()) == 1 and expect in err, err


def test_checkpoint_of_other_model_refused(tmp_path, capsys, gdir) -> None:
    text = _yaml(tmp_path, gdir, **{"training.num_train_steps": 2})
    assert _cli(tmp_path, capsys, text)[0] == 0
    rc, err = _cli(tmp_path, capsys, text.replace("comparator: dot", "comparator: cos").replace(
        "num_train_steps: 2", "num_train_steps: 4"))  # fmt: skip
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "model.comparator: 'cos' but the checkpoint" in err and "trained with 'dot'" in err
    assert "use `tbg train --fresh` or another training.save_dir" in err

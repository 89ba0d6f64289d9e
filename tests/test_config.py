"""The config schema: TwHIN's seed loads unchanged, round trips, and every mistake is one dotted-path line."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tbg.config import (
    Config,
    ConfigError,
    DataType,
    IdMode,
    LearningRate,
    RelationSides,
    dump_config,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "configs" / "twhin_seed.yaml"


@pytest.fixture()
def seed() -> dict[str, Any]:
    return yaml.safe_load(SEED.read_text())


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "c.yaml")
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- the seed


def test_seed_is_twhin_local_yaml_verbatim() -> None:
    """configs/twhin_seed.yaml is the 67-line file quoted in reference/twhin.md, byte for byte."""
    text = SEED.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 67
    reference = ROOT.parent / "shared" / "reference" / "twhin.md"
    if reference.exists():
        block = reference.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
        assert block == text


def test_seed_loads_with_twhin_values() -> None:
    cfg = load_config(str(SEED))
    assert cfg.runtime.enable_amp is False
    t = cfg.training
    assert (t.save_dir, t.num_train_steps, t.checkpoint_every_n, t.train_log_every_n) == (
        "/tmp/model",
        100000,
        100000,
        10,
    )
    assert (t.num_eval_steps, t.eval_log_every_n, t.eval_timeout_in_s, t.num_epochs) == (1000, 500, 10000.0, 5)
    assert t.checkpoint_max_to_keep is None and t.initial_checkpoint_dir is None

    m = cfg.model
    assert m.translation_optimizer.kind == "sgd" and m.translation_optimizer.params.lr == 0.05
    assert m.translation_optimizer.learning_rate.constant == 0.05
    tables = [(x.name, x.num_embeddings, x.embedding_dim, x.data_type) for x in m.embeddings.tables]
    assert tables == [("user", 424241, 4, DataType.fp32), ("tweet", 72543, 4, DataType.fp32)]
    assert [x.optimizer.kind for x in m.embeddings.tables] == ["sgd", "sgd"]
    assert [x.optimizer.params.lr for x in m.embeddings.tables] == [0.01, 0.005]
    assert [x.optimizer.lr_at(123) for x in m.embeddings.tables] == [0.01, 0.005]
    assert [x.num_partitions for x in m.embeddings.tables] == [1, 1]
    assert [(r.name, r.lhs, r.rhs, r.operator) for r in m.relations] == [
        (name, "user", "tweet", "translation") for name in ("fav", "reply", "retweet", "magic_recs")
    ]
    # tbg extensions take their defaults; no graph section means TwHIN's indices mode
    assert (m.comparator, m.loss, m.relation_sides) == ("dot", "logistic", RelationSides.both)
    assert cfg.graph.id_mode == IdMode.indices and cfg.graph_dir == "/tmp/model/graph"
    assert cfg.test_data is None and list(cfg.splits()) == ["train", "valid"]

    tr, va = cfg.train_data, cfg.validation_data
    root = "gs://follows_tml_01/tweet_eng/2023-01-23/large/edges/*"
    assert (tr.data_root, tr.per_replica_batch_size, tr.global_negatives, tr.in_batch_negatives) == (root, 500, 0, 10)
    assert (tr.limit, tr.offset) == (9990, None)
    assert (va.data_root, va.per_replica_batch_size, va.limit, va.offset) == (root, 500, 10, 9990)


@pytest.mark.parametrize("name", ["twhin_seed.yaml", "local.yaml", "wordnet.yaml", "wordnet_p4.yaml"])
def test_shipped_configs_load_and_round_trip(name: str) -> None:
    cfg = load_config(str(ROOT / "configs" / name))
    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert again.fingerprint() == cfg.fingerprint()


def test_local_yaml_keeps_every_seed_key(seed: dict[str, Any]) -> None:
    """configs/local.yaml is the seed made runnable: same tables and relations, every TwHIN key still there."""
    local = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())

    def keys(d: Any, prefix: str = "") -> set[str]:
        if isinstance(d, dict):
            return {k for key, v in d.items() for k in {prefix + key} | keys(v, prefix + key + ".")}
        if isinstance(d, list):
            return {k for i, v in enumerate(d) for k in keys(v, f"{prefix}[{i}].")}
        return set()

    # the optimizer kind may change (adagrad instead of sgd): compare everything but its name
    def strip(ks: set[str]) -> set[str]:
        return {k.replace(".sgd", ".<opt>").replace(".adagrad", ".<opt>") for k in ks}

    assert strip(keys(seed)) <= strip(keys(local))
    cfg = load_config(str(ROOT / "configs" / "local.yaml"))
    base = parse_config(seed)
    assert [(t.name, t.num_embeddings) for t in cfg.model.embeddings.tables] == [
        (t.name, t.num_embeddings) for t in base.model.embeddings.tables
    ]
    assert [(r.name, r.lhs, r.rhs, r.operator) for r in cfg.model.relations] == [
        (r.name, r.lhs, r.rhs, r.operator) for r in base.model.relations
    ]
    tr, va = cfg.train_data, cfg.validation_data
    assert tr.data_root == va.data_root and "://" not in tr.data_root
    assert (tr.offset or 0) + tr.limit == va.offset  # validation = the rows right after train


def test_round_trip_of_every_extension(seed: dict[str, Any]) -> None:
    seed["runtime"].update(device="cuda:1", num_threads=2, seed=7)
    seed["training"].update(bucket_order="affinity", checkpoint_max_to_keep=3, initial_checkpoint_dir="runs/a")
    seed["model"].update(comparator="cos", loss="ranking", margin=0.5, relation_sides="rhs")
    seed["model"]["embeddings"]["tables"][0].update(num_partitions=4, init_scale=0.01, data_type="fp16")
    seed["model"]["embeddings"]["tables"][1].update(num_partitions=4, data_type="fp16")
    seed["model"]["embeddings"]["tables"][1]["optimizer"] = {
        "adam": {"lr": 0.01, "betas": [0.8, 0.99]},
        "learning_rate": {
            "linear_ramp_to_cosine": {
                "learning_rate": 0.1,
                "final_learning_rate": 0.001,
                "num_ramp_steps": 10,
                "final_num_steps": 100,
            }
        },
    }
    seed["model"]["relations"][0].update(operator="complex_diagonal", weight=2.0)
    seed["graph"] = {
        "dir": "g",
        "format": "tsv",
        "delimiter": ",",
        "header": True,
        "columns": {"lhs": 0, "rel": "r", "rhs": 2, "weight": 3},
        "relation_by": "name",
    }
    seed["test_data"] = {"data_root": "t.tsv"}
    seed["eval"] = {"candidates": "sampled", "filtered": False, "hits_at": [1, 5]}
    cfg = parse_config(seed)
    assert cfg.model.embeddings.tables[1].optimizer.adam.betas == (0.8, 0.99)
    assert cfg.graph.columns.lhs == 0 and cfg.graph.columns.rel == "r"
    assert cfg.graph_dir == "g" and list(cfg.splits()) == ["train", "valid", "test"]
    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert isinstance(again, Config)


# ----------------------------------------------------------------------------- learning-rate schedules


def test_learning_rate_constant() -> None:
    lr = LearningRate(constant=0.05)
    assert [lr.at(s) for s in (0, 1, 10**6)] == [0.05, 0.05, 0.05]


def test_learning_rate_linear_ramp_to_constant() -> None:
    """TwHIN: min(lr, lr / num_ramp_steps * step)."""
    lr = parse_config_lr({"linear_ramp_to_constant": {"learning_rate": 0.2, "num_ramp_steps": 4}})
    assert [lr.at(s) for s in (0, 1, 2, 4, 100)] == pytest.approx([0.0, 0.05, 0.1, 0.2, 0.2])


def test_learning_rate_linear_ramp_to_cosine() -> None:
    """TwHIN: linear ramp, then final + (lr - final) * (1 + cos(pi * progress)) / 2, then final."""
    lr = parse_config_lr(
        {
            "linear_ramp_to_cosine": {
                "learning_rate": 1.0,
                "final_learning_rate": 0.1,
                "num_ramp_steps": 10,
                "final_num_steps": 110,
            }
        }
    )
    assert lr.at(0) == 0.0
    assert lr.at(5) == pytest.approx(0.5)
    assert lr.at(10) == pytest.approx(1.0)
    assert lr.at(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos(pi/2) = 0
    assert lr.at(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr.at(110) == pytest.approx(0.1)
    assert lr.at(10_000) == pytest.approx(0.1)


def test_learning_rate_piecewise_constant() -> None:
    """TwHIN: values[bisect_right(boundaries, step)] — a boundary step already uses the next value."""
    lr = parse_config_lr(
        {"piecewise_constant": {"learning_rate_boundaries": [10, 20], "learning_rate_values": [1.0, 0.5, 0.1]}}
    )
    assert [lr.at(s) for s in (0, 9, 10, 19, 20, 1000)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


def test_optimizer_lr_at_prefers_the_schedule(seed: dict[str, Any]) -> None:
    seed["model"]["translation_optimizer"] = {
        "adagrad": {"lr": 0.3},
        "learning_rate": {"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": 10}},
    }
    seed["model"]["embeddings"]["tables"][0]["optimizer"] = {"row_adagrad": {"lr": 0.2}}
    cfg = parse_config(seed)
    assert cfg.model.translation_optimizer.lr_at(5) == pytest.approx(0.05)
    assert cfg.model.embeddings.tables[0].optimizer.lr_at(5) == 0.2  # no schedule: the optimizer's lr


def parse_config_lr(schedule: dict[str, Any]) -> LearningRate:
    data = yaml.safe_load(SEED.read_text())
    data["model"]["translation_optimizer"]["learning_rate"] = schedule
    lr = parse_config(data).model.translation_optimizer.learning_rate
    assert lr is not None
    return lr


# ----------------------------------------------------------------------------- errors: one line, dotted path


def mutate(seed: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set (or with value=DELETE remove) the key at a dotted path like ``model.relations[2].lhs``."""
    data = copy.deepcopy(seed)
    parts = path.replace("[", ".[").split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


DELETE = object()

ERRORS = [
    # unknown keys: top level, nested, list item
    ("foo", 1, "foo: unknown key"),
    ("training.save_every", 5, "training.save_every: unknown key"),
    ("model.relations[2].operater", "translation", "model.relations[2].operater: unknown key"),
    ("model.embeddings.tables[1].dim", 4, "model.embeddings.tables[1].dim: unknown key"),
    ("model.translation_optimizer.sgd.nesterov", True, "model.translation_optimizer.sgd.nesterov: unknown key"),
    # unknown table references
    ("model.relations[1].lhs", "usr", "model.relations[1].lhs: unknown table 'usr'"),
    ("model.relations[3].rhs", "tweets", "model.relations[3].rhs: unknown table 'tweets'"),
    # wrong types
    ("training.num_train_steps", "many", "training.num_train_steps: expected an integer, got 'many'"),
    ("training.num_train_steps", 1.5, "training.num_train_steps: expected an integer, got 1.5"),
    ("training.num_epochs", True, "training.num_epochs: expected an integer, got True"),
    ("runtime.enable_amp", "yes", "runtime.enable_amp: expected true/false, got 'yes'"),
    ("training.eval_timeout_in_s", "1h", "training.eval_timeout_in_s: expected a number, got '1h'"),
    ("model.relations[0].name", 7, "model.relations[0].name: expected a string, got 7"),
    ("model.relations[0].lhs", None, "model.relations[0].lhs: expected a string, got None"),
    ("model", None, "model: expected a mapping, got None"),
    ("model.relations[0]", "fav", "model.relations[0]: expected a mapping, got 'fav'"),
    ("model.relations", {"name": "fav"}, "model.relations: expected a list, got {'name': 'fav'}"),
    ("model.translation_optimizer.sgd.lr", "fast", "model.translation_optimizer.sgd.lr: expected a number"),
    # negative / zero / non-finite values
    ("training.num_train_steps", 0, "training.num_train_steps: must be > 0, got 0"),
    ("runtime.hogwild_workers", 0, "runtime.hogwild_workers: must be > 0, got 0"),
    ("runtime.hogwild_workers", "auto", "runtime.hogwild_workers: expected an integer, got 'auto'"),
    ("training.checkpoint_every_n", -5, "training.checkpoint_every_n: must be > 0, got -5"),
    ("train_data.per_replica_batch_size", 0, "train_data.per_replica_batch_size: must be > 0, got 0"),
    ("train_data.in_batch_negatives", -1, "train_data.in_batch_negatives: must be >= 0, got -1"),
    ("validation_data.global_negatives", -3, "validation_data.global_negatives: must be >= 0, got -3"),
    ("train_data.limit", 0, "train_data.limit: must be > 0, got 0"),
    ("validation_data.offset", -1, "validation_data.offset: must be >= 0, got -1"),
    ("model.embeddings.tables[0].num_embeddings", 0, "model.embeddings.tables[0].num_embeddings: must be > 0"),
    ("model.embeddings.tables[1].embedding_dim", -4, "model.embeddings.tables[1].embedding_dim: must be > 0"),
    ("model.embeddings.tables[0].optimizer.sgd.lr", -0.1, "model.embeddings.tables[0].optimizer.sgd.lr: must be > 0"),
    ("model.translation_optimizer.sgd.lr", float("nan"), "model.translation_optimizer.sgd.lr: must be a finite"),
    ("model.relations", [], "model.relations: must not be empty"),
    # optimizer one-of
    (
        "model.embeddings.tables[0].optimizer.adam",
        {"lr": 0.1},
        "model.embeddings.tables[0].optimizer: exactly one of sgd/adam/adagrad/row_adagrad must be set",
    ),
    (
        "model.embeddings.tables[1].optimizer.sgd",
        DELETE,
        "model.embeddings.tables[1].optimizer: exactly one of sgd/adam/adagrad/row_adagrad must be set"
        " for optimizer, got none",
    ),
    # learning_rate one-of and schedule values
    (
        "model.translation_optimizer.learning_rate.piecewise_constant",
        {"learning_rate_boundaries": [5], "learning_rate_values": [1.0, 0.1]},
        "model.translation_optimizer.learning_rate: exactly one of constant/linear_ramp_to_constant/",
    ),
    (
        "model.translation_optimizer.learning_rate.constant",
        DELETE,
        "model.translation_optimizer.learning_rate: exactly one of",
    ),
    (
        "model.translation_optimizer.learning_rate",
        {"piecewise_constant": {"learning_rate_boundaries": [5, 10], "learning_rate_values": [1.0, 0.1]}},
        "model.translation_optimizer.learning_rate.piecewise_constant.learning_rate_values: must have exactly one more",
    ),
    (
        "model.translation_optimizer.learning_rate",
        {"piecewise_constant": {"learning_rate_boundaries": [10, 5], "learning_rate_values": [1.0, 0.5, 0.1]}},
        "model.translation_optimizer.learning_rate.piecewise_constant.learning_rate_boundaries: must be strictly",
    ),
    (
        "model.translation_optimizer.learning_rate",
        {"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": 0}},
        "model.translation_optimizer.learning_rate.linear_ramp_to_constant.num_ramp_steps: must be > 0, got 0",
    ),
    (
        "model.translation_optimizer.learning_rate",
        {"linear_ramp_to_cosine": {"learning_rate": 0.1, "num_ramp_steps": 10, "final_num_steps": 100}},
        "model.translation_optimizer.learning_rate.linear_ramp_to_cosine.final_learning_rate: required key missing",
    ),
    ("model.translation_optimizer.learning_rate.constant", -1.0, "learning_rate.constant: must be >= 0"),
    # bad enums
    (
        "model.relations[0].operator",
        "rotate",
        "model.relations[0].operator: must be one of none, translation, diagonal, linear, affine, complex_diagonal,"
        " got 'rotate'",
    ),
    ("model.embeddings.tables[0].data_type", "bf16", "model.embeddings.tables[0].data_type: must be one of fp32, fp16"),
    ("model.comparator", "cosine", "model.comparator: must be one of dot, cos, l2, squared_l2, got 'cosine'"),
    ("model.loss", "bce", "model.loss: must be one of logistic, ranking, softmax, got 'bce'"),
    ("model.relation_sides", "lhs", "model.relation_sides: must be one of both, rhs, got 'lhs'"),
    ("training.bucket_order", "sorted", "training.bucket_order: must be one of buffer, inside_out, affinity, random"),
    ("graph", {"id_mode": "ids"}, "graph.id_mode: must be one of indices, names, got 'ids'"),
    ("graph", {"format": "json"}, "graph.format: must be one of parquet, tsv, csv, got 'json'"),
    ("eval", {"candidates": "some"}, "eval.candidates: must be one of all, seen, sampled, got 'some'"),
    ("runtime.device", "tpu", "runtime.device: must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (
        "train_data.in_batch_scope",
        "edge",
        "train_data.in_batch_scope: must be one of auto, relation, batch, chunk, got 'edge'",
    ),
    (
        "train_data.global_negatives_scope",
        "step",
        "train_data.global_negatives_scope: must be one of batch, chunk, got 'step'",
    ),
    (
        "train_data.global_negatives_scope",
        "chunk",
        "train_data.global_negatives_scope: chunk needs in_batch_scope chunk",
    ),
    ("train_data.global_negatives_chunks_per_draw", 0, "train_data.global_negatives_chunks_per_draw: must be > 0"),
    (
        "train_data.global_negatives_chunks_per_draw",
        4,
        "train_data.global_negatives_chunks_per_draw: needs global_negati",
    ),
    # cross-field rules
    ("model.embeddings.tables[0].embedding_dim", 8, "model.relations[0]: tables 'user' (dim 8) and 'tweet' (dim 4)"),
    ("model.embeddings.tables[1].name", "user", "model.embeddings.tables[1].name: duplicate table name 'user'"),
    ("model.relations[1].name", "fav", "model.relations[1].name: duplicate relation name 'fav'"),
    ("model.relations[0].operator", "complex_diagonal", None),  # dim 4 is even: valid
    # missing required keys
    ("train_data", DELETE, "train_data: required key missing"),
    ("model.translation_optimizer", DELETE, "model.translation_optimizer: required key missing"),
    ("model.relations[2].rhs", DELETE, "model.relations[2].rhs: required key missing"),
    ("validation_data.data_root", DELETE, "validation_data.data_root: required key missing"),
    ("model.translation_optimizer.sgd.lr", DELETE, "model.translation_optimizer.sgd.lr: required key missing"),
    (
        "model.embeddings.tables[1].num_embeddings",
        DELETE,
        "model.embeddings.tables[1].num_embeddings: required in indices id mode",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), ERRORS, ids=[f"{p}={v!r}"[:60] for p, v, _ in ERRORS])
def test_error_is_one_dotted_line(seed: dict[str, Any], path: str, value: Any, expected: str | None) -> None:
    data = mutate(seed, path, value)
    if expected is None:
        parse_config(data, "c.yaml")
        return
    message = error(data)
    assert message.startswith("c.yaml: "), message
    assert expected in message, message


def test_partitioned_tables_must_agree(seed: dict[str, Any]) -> None:
    seed["model"]["embeddings"]["tables"][0]["num_partitions"] = 4
    parse_config(copy.deepcopy(seed))  # one partitioned table, one unpartitioned: fine
    seed["model"]["embeddings"]["tables"][1]["num_partitions"] = 2
    assert "model.embeddings.tables: partitioned tables must share one num_partitions, got [2, 4]" in error(seed)


def test_dims_may_differ_across_relations(seed: dict[str, Any]) -> None:
    """tbg's relaxation: tables may differ in dim as long as no relation joins two of them."""
    seed["model"]["embeddings"]["tables"].append(
        {
            "name": "topic",
            "num_embeddings": 10,
            "embedding_dim": 8,
            "data_type": "fp16",
            "optimizer": {"sgd": {"lr": 1}},
        }
    )
    cfg = parse_config(copy.deepcopy(seed))
    assert cfg.model.table("topic").embedding_dim == 8
    seed["model"]["relations"].append({"name": "about", "lhs": "tweet", "rhs": "topic"})
    assert "model.relations[4]: tables 'tweet' (dim 4) and 'topic' (dim 8) must share embedding_dim" in error(seed)


def test_names_mode_may_omit_num_embeddings(seed: dict[str, Any]) -> None:
    for table in seed["model"]["embeddings"]["tables"]:
        del table["num_embeddings"]
    assert "num_embeddings: required in indices id mode" in error(copy.deepcopy(seed))
    seed["graph"] = {"id_mode": "names"}
    assert parse_config(seed).model.embeddings.tables[0].num_embeddings is None


def test_twhin_relaxations_are_accepted(seed: dict[str, Any]) -> None:
    """offset 0 and in_batch_negatives 0 are valid in tbg (TwHIN rejects the first and crashes on the second)."""
    seed["validation_data"]["offset"] = 0
    seed["train_data"]["in_batch_negatives"] = 0
    del seed["train_data"]["global_negatives"]
    cfg = parse_config(seed)
    assert (cfg.validation_data.offset, cfg.train_data.in_batch_negatives, cfg.train_data.global_negatives) == (0, 0, 0)


def test_several_problems_are_counted_on_one_line(seed: dict[str, Any]) -> None:
    seed["foo"] = 1
    seed["training"]["num_epochs"] = 0
    message = error(seed)
    assert message.count("\n") == 0 and message.endswith("(+1 more)")


def test_not_a_mapping() -> None:
    assert error([1, 2]) == "c.yaml: the config must be a YAML mapping, got list"  # type: ignore[arg-type]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("runtime:\n  enable_amp: false\ntraining:\n  save_dir: [unclosed\n  num_epochs: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: line ") and "invalid YAML" in message and "\n" not in message
    line = int(message.split(" line ", 1)[1].split(":", 1)[0])
    assert 4 <= line <= 5  # the unclosed flow sequence


def test_invalid_yaml_tab_indent(tmp_path: Path) -> None:
    path = tmp_path / "tab.yaml"
    path.write_text("runtime:\n\tenable_amp: false\n")
    with pytest.raises(ConfigError, match=r"tab\.yaml: line 2: invalid YAML"):
        load_config(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found$"):
        load_config(str(tmp_path / "nope.yaml"))


def test_load_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(SEED.read_text().replace("operator: translation", "operater: translation", 1))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == f"{path}: model.relations[0].operater: unknown key"


def test_cli_prints_config_errors_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tbg.cli import main

    path = tmp_path / "typo.yaml"
    path.write_text(SEED.read_text().replace("lhs: user", "lhs: usr", 2))
    assert main(["synth", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tbg synth: error: ") and "\n" not in err
    assert "model.relations[0].lhs: unknown table 'usr'" in err
    assert not (tmp_path / "out").exists()

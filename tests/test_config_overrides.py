"""`--set dotted.key=value` overrides: the same dotted paths as the errors, values parsed as YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tbg.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "configs" / "twhin_seed.yaml"


def resolved(capsys: pytest.CaptureFixture[str], *sets: str) -> dict:
    argv = ["config", str(SEED)]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return yaml.safe_load(capsys.readouterr().out)


def error(capsys: pytest.CaptureFixture[str], *sets: str) -> str:
    argv = ["config", str(SEED)]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_values_are_set_at_dotted_paths(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = resolved(
        capsys,
        "training.save_dir=/runs/x",
        "model.relations[2].operator=linear",
        "model.embeddings.tables[1].optimizer.sgd.lr=0.5",
        "eval.hits_at=[1, 5]",
        "runtime.seed=7",
        "runtime.enable_amp=true",
        "graph.dir=/graphs/g",  # a section the file does not have is created
        "test_data.data_root=/data/test.parquet",
    )
    assert cfg["training"]["save_dir"] == "/runs/x"
    assert cfg["model"]["relations"][2]["operator"] == "linear"
    assert cfg["model"]["relations"][1]["operator"] == "translation"
    assert cfg["model"]["embeddings"]["tables"][1]["optimizer"]["sgd"]["lr"] == 0.5
    assert cfg["eval"]["hits_at"] == [1, 5]
    assert cfg["runtime"]["seed"] == 7 and cfg["runtime"]["enable_amp"] is True
    assert cfg["graph"]["dir"] == "/graphs/g"
    assert cfg["test_data"]["data_root"] == "/data/test.parquet"


def test_later_overrides_win_and_null_unsets(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = resolved(capsys, "train_data.limit=5", "train_data.limit=null", "training.save_dir=a", "training.save_dir=b")
    assert cfg["train_data"]["limit"] is None and cfg["training"]["save_dir"] == "b"


@pytest.mark.parametrize(
    ("item", "expect"),
    [
        ("training.sav_dir=/x", "training.sav_dir: unknown key (--set training.sav_dir=/x)"),
        ("model.relations[2].operater=linear", "model.relations[2].operater: unknown key"),
        ("model.relations[9].operator=linear", "model.relations[9]: no such item (the config has 4)"),
        ("training.save_dir.x=1", "training.save_dir.x: unknown key"),
        ("training.num_epochs=abc", "training.num_epochs: expected an integer, got 'abc'"),
        ("model.relations[0].operator=linaer", "model.relations[0].operator: must be one of none, translation"),
        ("training", "--set 'training': expected dotted.key=value"),
        ("a..b=1", "is not a dotted path"),
    ],
)
def test_bad_overrides_are_one_line(capsys: pytest.CaptureFixture[str], item: str, expect: str) -> None:
    message = error(capsys, item)
    assert message.startswith(f"tbg config: error: {SEED}: ")
    assert expect in message


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_applies_set(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str) -> None:
    """Each subcommand reads its config through the overrides: a typo in one is refused before any work."""
    extra = {
        "export": ["--format", "tsv", "--out", str(tmp_path / "out")],
        "neighbors": ["--type", "user", "--name", "1"],
        "predict": ["--relation", "fav", "--lhs", "1"],
    }.get(command, [])
    assert main([command, str(SEED), *extra, "--set", "training.sav_dir=/x"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"tbg {command}: error: {SEED}: training.sav_dir: unknown key (--set training.sav_dir=/x)"
    assert not (tmp_path / "out").exists()


def test_verbatim_seed_runs_on_other_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's promise: TwHIN's seed, unchanged, trained on local data through --set alone."""
    import json

    edges = str(tmp_path / "sample" / "edges" / "*.parquet")
    sets = [f"train_data.data_root={edges}", f"validation_data.data_root={edges}"]
    sets += [f"training.save_dir={tmp_path / 'run'}", "training.num_epochs=1"]
    argv = [str(SEED), *(a for item in sets for a in ("--set", item))]
    assert main(["synth", *argv]) == 0
    assert main(["import", *argv]) == 0
    assert (tmp_path / "run" / "graph" / "manifest.json").exists()
    capsys.readouterr()
    assert main(["train", *argv, "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 20  # 9990 training rows (the seed's limit) in batches of 500, one epoch


def test_on_off_are_strings_in_files_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """YAML 1.2 booleans: `cpu_bf16: off` (the documented spelling) is the string, in a file and in --set."""
    assert resolved(capsys, "runtime.cpu_bf16=off")["runtime"]["cpu_bf16"] == "off"
    assert resolved(capsys, "runtime.cpu_bf16=on")["runtime"]["cpu_bf16"] == "on"
    data = yaml.safe_load(SEED.read_text(encoding="utf-8"))
    data.setdefault("runtime", {})["cpu_bf16"] = "off"
    text = yaml.safe_dump(data, sort_keys=False)
    assert "cpu_bf16: 'off'" in text  # (PyYAML quotes it; a user writes it bare)
    path = tmp_path / "cfg.yaml"
    path.write_text(text.replace("cpu_bf16: 'off'", "cpu_bf16: off"), encoding="utf-8")
    assert main(["config", str(path)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["runtime"]["cpu_bf16"] == "off"
    assert "expected true/false, got 'yes'" in error(capsys, "training.report=yes")

"""The config reference is generated from the schema and `tbg config --explain` explains a resolved config."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import attrs
import pytest
from builders import child_env

from tbg.cli import main
from tbg.config import Config

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "configs" / "twhin_seed.yaml"


def _schema_classes() -> list[type]:
    """Every attrs class reachable from Config through field annotations."""
    seen: list[type] = []

    def kinds(annotation: object) -> list[type]:
        if attrs.has(annotation):
            return [annotation]  # type: ignore[list-item]
        return [k for arg in typing.get_args(annotation) for k in kinds(arg)]

    def walk(cls: type) -> None:
        if cls not in seen:
            seen.append(cls)
            for annotation in typing.get_type_hints(cls).values():
                for kind in kinds(annotation):
                    walk(kind)

    walk(Config)
    return seen


def test_every_field_documents_itself() -> None:
    classes = _schema_classes()
    assert len(classes) > 15
    for cls in classes:
        for field in attrs.fields(cls):
            assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help text"


def test_committed_reference_is_up_to_date() -> None:
    """In a fresh process, so that a plugin registered by another test cannot show up in the reference."""
    env = child_env()
    proc = subprocess.run(
        [sys.executable, "-m", "tbg", "config", "--doc"], capture_output=True, text=True, env=env, check=True
    )
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert proc.stdout == committed, "docs/config.md is stale: run `tbg config --doc --out docs/config.md`"


def test_reference_covers_every_section_and_key(tmp_path: Path) -> None:
    out = tmp_path / "config.md"
    assert main(["config", "--doc", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    for heading in ("## `runtime`", "## `training`", "### `model.relations[]`", "## `graph` **ext**"):
        assert heading in text
    assert "### `<optimizer>`: `model.embeddings.tables[].optimizer`, `model.translation_optimizer`" in text
    assert "| `save_dir` | str | `/tmp/model` | ignored (its `--save_dir` flag is used) |" in text
    assert "| `in_batch_scope` **ext** |" in text


def test_explain_marks_changed_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", str(SEED), "--explain", "--set", "training.save_dir=/data/run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"# {SEED}")
    values = {line[2:].split(": ", 1)[0]: line for line in lines[1:] if not line.startswith("      ")}
    assert values["training.save_dir"] == "* training.save_dir: /data/run"
    assert values["training.num_epochs"] == "* training.num_epochs: 5"  # the seed's 5 against the default 1
    assert values["runtime.enable_amp"] == "  runtime.enable_amp: false"
    assert values["model.relations[3].name"].endswith("magic_recs")
    meaning = lines[lines.index(values["training.save_dir"]) + 1]
    assert "checkpoints" in meaning and "default: /tmp/model" in meaning and "TwHIN" in meaning


def test_config_without_flags_prints_the_resolved_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    assert main(["config", str(SEED)]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["eval"]["hits_at"] == [1, 3, 10]  # defaults filled in
    assert resolved["model"]["relations"][3]["name"] == "magic_recs"


def test_config_needs_a_file_unless_doc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CONFIG" in err

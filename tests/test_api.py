"""The Python API end to end, in-process: import -> train -> evaluate -> export -> load -> score."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders import child_env, config_data

import tbg
from tbg.config import ConfigError
from tbg.errors import QueryError

ROOT = Path(__file__).resolve().parents[1]
RELATIONS = ("likes", "follows")


def write_sources(root: Path, seed: int = 0) -> dict[str, list[tuple[str, str, str]]]:
    """A names-mode graph of 40 people in 4 groups: `likes` stays within a group, `follows` goes to the next."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 4, 40)
    edges = set()
    while len(edges) < 700:
        x, r = int(rng.integers(40)), int(rng.integers(2))
        targets = np.nonzero(group == (group[x] + r) % 4)[0]
        edges.add((f"p{x}", RELATIONS[r], f"p{int(rng.choice(targets))}"))
    rows = sorted(edges)
    rng.shuffle(rows)
    splits = {"train": rows[:600], "valid": rows[600:650], "test": rows[650:]}
    for split, part in splits.items():
        (root / f"{split}.tsv").write_text("".join(f"{a}\t{r}\t{b}\n" for a, r, b in part))
    return splits


def config(root: Path) -> dict[str, Any]:
    data = {"per_replica_batch_size": 50, "in_batch_negatives": 10, "global_negatives": 10}
    return config_data(
        root / "graph", save_dir=root / "run", types={"person": (None, 8, 2)},
        relations=[(r, "person", "person", "diagonal") for r in RELATIONS],
        train=str(root / "train.tsv"), valid=str(root / "valid.tsv"), test=str(root / "test.tsv"),
        overrides={
            "runtime": {"seed": 3, "hogwild_workers": 1},
            "training": {"save_dir": str(root / "run"), "num_epochs": 4, "train_log_every_n": 5},
            "model.loss": "logistic", "graph.id_mode": "names", "graph.format": "tsv",
            "train_data": {"data_root": str(root / "train.tsv"), **data},
            "validation_data": {"data_root": str(root / "valid.tsv"), **data},
        },
    )  # fmt: skip


def realistic_rank(scores: np.ndarray, true_score: float) -> float:
    """The eval protocol's rank: 1 + #greater + #ties/2, the true entity itself not a tie."""
    greater = int(np.sum(scores > true_score))
    ties = int(np.sum(scores == true_score)) - 1
    return 1.0 + greater + ties / 2.0


def test_end_to_end_in_process(tmp_path: Path) -> None:
    splits = write_sources(tmp_path)
    cfg = tbg.load_config(config(tmp_path), ["training.num_epochs=5"])
    assert cfg.training.num_epochs == 5

    imported = tbg.import_graph(cfg)
    assert imported.splits == {name: len(rows) for name, rows in splits.items()}

    summary = tbg.train(cfg)
    assert summary["epoch"] == 5 and summary["steps"] == summary["step"] > 0 and np.isfinite(summary["final_loss"])
    again = tbg.train(cfg)
    assert again["already_finished"] and again["steps"] == 0 and again["step"] == summary["step"]

    report = tbg.evaluate(cfg, split="test", filtered=False)
    assert report["split"] == "test" and report["counts"]["edges"] == len(splits["test"])
    mrr = report["metrics"]["overall"]["mean"]["mrr"]
    assert mrr > 0.13  # 40 candidates in 4 groups: random ranking scores about 0.11, a perfect grouping 0.29

    exported = tbg.export(cfg, "npy", str(tmp_path / "export"))
    assert exported["entity_types"] == {"person": (40, 8)}

    model = tbg.load(cfg.training.save_dir)
    names = model.entity_names("person")
    vectors = model.vectors("person")
    assert sorted(names) == sorted({n for rows in splits.values() for a, _, b in rows for n in (a, b)})
    np.testing.assert_array_equal(vectors, np.load(tmp_path / "export" / "person.npy"))
    assert (tmp_path / "export" / "person_names.txt").read_text().split() == list(names)
    np.testing.assert_array_equal(model.vector("person", names[7]), vectors[7])

    # the model's scores reproduce eval's ranking exactly: same function, same parameters
    ranks = []
    everyone = list(names)
    for lhs, rel, rhs in splits["test"]:
        all_rhs = model.score([lhs] * len(everyone), rel, everyone, target="rhs")
        ranks.append(realistic_rank(all_rhs, model.score([lhs], rel, [rhs], target="rhs")[0]))
        all_lhs = model.score(everyone, rel, [rhs] * len(everyone), target="lhs")
        ranks.append(realistic_rank(all_lhs, model.score([lhs], rel, [rhs], target="lhs")[0]))
    assert float(np.mean(1.0 / np.array(ranks))) == pytest.approx(mrr, rel=1e-9)


def test_score_by_index_and_name_agree_and_errors_are_clear(tmp_path: Path) -> None:
    write_sources(tmp_path, seed=1)
    data = config(tmp_path)
    data["training"]["num_epochs"] = 1
    tbg.import_graph(data)
    tbg.train(data)
    model = tbg.load(str(tmp_path / "run"))
    a, b = model.entity_names("person")[:2]
    np.testing.assert_array_equal(model.score([a, b], "follows", [b, a]), model.score([a, b], 1, [b, a]))
    with pytest.raises(QueryError, match="unknown person 'nobody'"):
        model.score(["nobody"], "likes", [a])
    with pytest.raises(QueryError, match="unknown relation 'hates'"):
        model.score([a], "hates", [b])
    with pytest.raises(QueryError, match="unknown entity type 'user'"):
        model.vectors("user")
    with pytest.raises(ConfigError, match="training.sav_dir: unknown key"):
        tbg.load_config(data, ["training.sav_dir=x"])


def test_import_tbg_and_load_config_stay_torch_free(tmp_path: Path) -> None:
    code = (
        "import sys, tbg\n"
        "assert 'torch' not in sys.modules, 'import tbg'\n"
        "cfg = tbg.load_config(sys.argv[1], ['training.save_dir=/tmp/x'])\n"
        "assert cfg.training.save_dir == '/tmp/x'\n"
        "assert callable(tbg.train) and callable(tbg.export) and callable(tbg.load)\n"
        "assert 'torch' not in sys.modules, 'tbg.load_config'\n"
    )
    env = child_env()
    seed = str(ROOT / "configs" / "twhin_seed.yaml")
    proc = subprocess.run([sys.executable, "-c", code, seed], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_training_does_not_load_torch_compiler_modules(tmp_path: Path) -> None:
    """A training run stays off torch.fx's symbolic shapes and sympy (tens of MB resident, Python work per
    step): e.g. autograd checks an explicit backward seed through them."""
    write_sources(tmp_path)
    data = config(tmp_path)
    data["training"]["num_epochs"] = 1
    tbg.import_graph(data)
    code = (
        "import json, sys, tbg\n"
        "tbg.train(json.loads(sys.argv[1]))\n"
        "loaded = [m for m in ('sympy', 'torch.fx.experimental.symbolic_shapes') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(data, default=str)], capture_output=True, text=True, env=child_env()
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_submodules_named_like_api_functions_stay_importable() -> None:
    from tbg.export import FORMATS
    from tbg.train.cli import train as cli_train

    assert "npy" in FORMATS and callable(cli_train)
    assert callable(tbg.train) and callable(tbg.export)
    assert tbg.export.FORMATS is FORMATS


@pytest.mark.parametrize("mode", ["on", "off", "auto"])
def test_cpu_bf16_decides_the_training_score_precision(tmp_path: Path, mode: str) -> None:
    """`on`/`off` are obeyed; `auto` uses bf16 only on the CPUs where it beats fp32 (AMX, or AVX512-BF16 on AMD)."""
    from tbg import runtime

    write_sources(tmp_path)
    cfg = tbg.load_config(config(tmp_path), ["training.num_epochs=1", f"runtime.cpu_bf16={mode}"])
    tbg.import_graph(cfg)
    auto = runtime.cpu_bf16_pays()
    assert tbg.train(cfg)["bf16"] is {"on": True, "off": False, "auto": auto}[mode]

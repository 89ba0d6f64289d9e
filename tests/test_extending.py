"""docs/extending.md's worked example, run as written: a user file registers an operator and a loss, and
tbg trains with them, evaluates the checkpoint and exports the new operator's parameters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from builders import NODE_RELATIONS, make_config, planted_graph

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_worked_example_trains_evaluates_and_exports(tmp_path: Path) -> None:
    plugin, driver = _python_blocks()
    (tmp_path / "my_plugins.py").write_text(plugin)
    (tmp_path / "run.py").write_text(driver)
    # the test process has not registered the plugins: write the config with built-in names, then rename
    cfg = make_config(
        tmp_path / "graph", save_dir=tmp_path / "run", types={"node": (200, 16, 1)}, relations=NODE_RELATIONS[:2],
        overrides={"training.num_epochs": 3},
    )  # fmt: skip
    planted_graph(cfg, edges=3000)
    data = cfg.to_dict()
    data["model"]["loss"] = "bpr"
    for rel in data["model"]["relations"]:
        rel["operator"] = "rotation"
    data["eval"]["split"] = "test"
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    res = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr

    metrics = json.loads((tmp_path / "run" / "eval_test.json").read_text())
    overall = metrics["metrics"]["overall"]
    assert overall["mean"]["mrr"] > 0.1, overall  # random ranking of 200 entities: ~0.03
    params = np.load(tmp_path / "out" / "relations.npz")
    assert sorted(params.files) == [f"r{i}/{side}/phase" for i in range(2) for side in ("lhs", "rhs")]
    assert params["r0/lhs/phase"].shape == (8,) and np.abs(params["r0/lhs/phase"]).max() > 0  # trained, dim 16

"""`tbg report`: pictures and summary of a real (tiny) run, checked against the files the run wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from builders import child_env, make_config, planted_graph

from tbg.cli import main
from tbg.config import dump_config
from tbg.evaluation.ranking import rank_histogram
from tbg.run_report import load_run, report_pictures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(tmp, save_dir, **over):
    over = {"training.num_train_steps": 24, "training.train_log_every_n": 3, "training.eval_log_every_n": 8,
            "training.validation_mrr": True, "training.report": True, "train_data.per_replica_batch_size": 50,
            "train_data.in_batch_negatives": 20, "train_data.global_negatives": 10, **over}  # fmt: skip
    cfg = make_config(tmp / "graph", save_dir=save_dir, types={"node": (80, 16, 1)}, overrides=over)
    planted_graph(cfg, edges=900)
    path = tmp / "cfg.yaml"
    path.write_text(dump_config(cfg))
    return str(path), cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run through the CLI: train (report written at its end), then eval."""
    tmp = tmp_path_factory.mktemp("run")
    path, cfg = _config(tmp, tmp / "model")
    assert main(["train", path, "--no-progress"]) == 0
    save_dir = cfg.training.save_dir
    after_train = open(os.path.join(save_dir, "report", "index.md")).read()
    assert main(["eval", path]) == 0
    return path, save_dir, after_train


def _records(save_dir, key):
    lines = open(os.path.join(save_dir, "metrics.jsonl")).read().splitlines()
    return [r for r in map(json.loads, lines) if key in r]


def test_train_writes_report_when_asked(trained):
    _, save_dir, index = trained
    assert "(train_loss.png)" in index and "(validation.png)" in index
    assert "no eval_<split>.json" in index  # eval had not run yet: said, not an error


def test_report_pictures_are_pngs_of_the_run(trained):
    path, save_dir, _ = trained
    assert main(["report", path]) == 0
    out = os.path.join(save_dir, "report")
    expected = ["train_loss", "train_speed", "validation", "eval_test_relations", "eval_test_ranks"]
    assert sorted(n for n in os.listdir(out) if n.endswith(".png")) == sorted(f"{n}.png" for n in expected)
    from matplotlib.image import imread

    for name in expected:
        png = os.path.join(out, f"{name}.png")
        assert open(png, "rb").read(8) == PNG_MAGIC
        pixels = imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert float(pixels[..., :3].std()) > 0.01  # not a blank canvas
    index = open(os.path.join(out, "index.md")).read()
    assert all(f"({n}.png)" in index for n in expected)
    train = _records(save_dir, "loss")
    assert f"{train[-1]['loss']:.4f} at step 24" in index
    mrr = json.load(open(os.path.join(save_dir, "eval_test.json")))["metrics"]["overall"]["mean"]["mrr"]
    assert f"MRR {mrr:.4f}" in index


def test_drawn_series_equal_the_metrics_and_eval_files(trained):
    _, save_dir, _ = trained
    pictures = {p.name: p for p in report_pictures(load_run(save_dir))}
    train, valid = _records(save_dir, "loss"), _records(save_dir, "val_loss")
    assert [r["step"] for r in train] == list(range(3, 25, 3)) and [r["step"] for r in valid] == [8, 16, 24]
    t0 = min(r["time"] for r in train + valid)
    by_step, by_time = pictures["train_loss"].panels
    assert by_step.series["loss"] == ([r["step"] for r in train], [r["loss"] for r in train])
    assert by_time.series["loss"] == ([r["time"] - t0 for r in train], [r["loss"] for r in train])
    speed = pictures["train_speed"].panels[0].series["edges_per_s"]
    assert speed == ([r["step"] for r in train], [r["edges_per_s"] for r in train])
    loss, ranked = pictures["validation"].panels
    assert loss.series["val_loss"] == ([8, 16, 24], [r["val_loss"] for r in valid])
    assert ranked.series["mrr"] == ([8, 16, 24], [r["valid_mrr"] for r in valid])
    assert ranked.series["hits@10"][1] == [r["valid_hits@10"] for r in valid]

    result = json.load(open(os.path.join(save_dir, "eval_test.json")))
    bars = pictures["eval_test_relations"].panels[0]
    assert bars.categories == ["overall", "r0", "r1", "r2"]
    per = [result["metrics"]["overall"], *(result["metrics"]["per_relation"][r] for r in ("r0", "r1", "r2"))]
    for key in ("mrr", "hits@1", "hits@3", "hits@10"):
        assert bars.series[key] == ([0.0, 1.0, 2.0, 3.0], [b["mean"][key] for b in per])
    stairs = pictures["eval_test_ranks"].panels[0]
    edges = result["counts"]["edges"]
    for side in ("lhs", "rhs"):
        hist = result["metrics"]["overall"][side]["rank_histogram"]
        assert stairs.series[side] == (hist["edges"], hist["counts"])
        assert sum(hist["counts"]) == edges and len(hist["edges"]) == len(hist["counts"]) + 1


def test_rank_histogram_bins_are_powers_of_two():
    got = rank_histogram(np.array([1.0, 1.5, 2.0, 3.5, 4.0, 7.999, 8.0, 1000.0]))
    assert got == {"edges": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], "counts": [2, 2, 2, 1, 0, 0, 0, 0, 0, 1]}
    assert rank_histogram(np.array([])) == {"edges": [1], "counts": []}


def test_missing_files_draw_what_they_can(trained, tmp_path):
    """Without eval results the eval pictures go (also from an earlier report); a torn last line is left out."""
    path, save_dir, _ = trained
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(save_dir, copy)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(open(path).read().replace(str(save_dir), str(copy)))
    assert main(["report", str(cfg_path)]) == 0
    assert os.path.exists(copy / "report" / "eval_test_ranks.png")
    os.remove(copy / "eval_test.json")
    with open(copy / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 25, "loss": 0.')
    assert main(["report", str(cfg_path)]) == 0
    pngs = sorted(os.listdir(copy / "report"))
    assert pngs == ["index.md", "train_loss.png", "train_speed.png", "validation.png"]
    index = (copy / "report" / "index.md").read_text()
    assert "no eval_<split>.json" in index and "last line is incomplete" in index


def test_no_run_and_bad_metrics_are_one_line_errors(tmp_path, capsys):
    path, cfg = _config(tmp_path, tmp_path / "empty")
    assert main(["report", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no run here" in err
    os.makedirs(cfg.training.save_dir)
    with open(os.path.join(cfg.training.save_dir, "metrics.jsonl"), "w") as fh:
        fh.write('{"step": 3, "loss": 1.0}\nnot json\n{"step": 6, "loss": 0.9}\n')
    assert main(["report", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "metrics.jsonl:2: not a JSON record" in err


def test_report_does_not_import_torch(trained):
    path, _, _ = trained
    code = (
        "import sys; from tbg.cli import main; rc = main(['report', sys.argv[1]]);"
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=child_env())
    assert proc.returncode == 0, proc.stderr

"""`tbg report CONFIG`: pictures of a run (PNG) and a markdown summary in ``save_dir/report/``.

Reads what a run leaves in save_dir — ``metrics.jsonl`` (training and validation records), ``eval_<split>.json``
(``tbg eval``) and the latest checkpoint's progress — and draws what is there; the summary says what is missing.
:func:`report_pictures` returns exactly the series each picture draws, so what is drawn can be checked against
the files.  torch-free; matplotlib is imported only to draw, on its Agg canvas (no display needed).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tbg.checkpoint import CheckpointStore
from tbg.durable_files import atomic_write_bytes, atomic_write_text
from tbg.errors import TbgError
from tbg.run_files import METRICS, eval_result_path, metrics_path

REPORT_DIR = "report"
INDEX = "index.md"
EVAL_SPLITS = ("test", "valid", "train")
DRAWN = ("loss", "edges_per_s", "val_loss", "time")  # and valid_* (training.validation_mrr)
MAX_BARS = 30  # per-relation bars: the relations with the most eval edges beyond this many


@dataclass(frozen=True)
class Panel:
    """One axes and exactly what it draws: ``series`` maps a label to (x, y).

    kind ``line``: y against x; ``bar``: grouped bars, x = category positions (``categories`` names them);
    ``stairs``: a histogram, x = bin edges (one more than y).
    """

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, tuple[list[float], list[float]]]
    kind: str = "line"
    categories: list[str] | None = None
    xlog: bool = False


@dataclass(frozen=True)
class Picture:
    name: str  # file stem: <name>.png
    title: str
    panels: list[Panel]


@dataclass
class Run:
    """What a run left in its save_dir; ``train``/``valid`` keep one record per step (the latest written)."""

    save_dir: str
    train: list[dict[str, Any]] = field(default_factory=list)
    valid: list[dict[str, Any]] = field(default_factory=list)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None
    checkpoint_name: str | None = None
    notes: list[str] = field(default_factory=list)  # what is missing or doubtful


# ----------------------------------------------------------------------------- reading


def _keep_latest(records: list[dict[str, Any]], rec: dict[str, Any]) -> None:
    """A resumed run logs again the steps after its checkpoint: the later record of a step replaces the earlier."""
    while records and records[-1]["step"] >= rec["step"]:
        records.pop()
    records.append(rec)


def _read_metrics(path: str, run: Run) -> None:
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline; else a record cut short by a crash
    if torn.strip():
        run.notes.append(f"{METRICS}: the last line is incomplete (a write cut short); it is left out")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise TbgError(f"{path}:{number}: not a JSON record") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            raise TbgError(f"{path}:{number}: a record needs an integer 'step'")
        for key, value in rec.items():
            if key in DRAWN or key.startswith("valid_"):
                if value is None:  # a non-finite number (listed under "nonfinite"): a gap in the curves
                    continue
                if not isinstance(value, (int, float)):
                    raise TbgError(f"{path}:{number}: field {key!r} is not a number")
        if "loss" in rec:
            _keep_latest(run.train, rec)
        elif "val_loss" in rec:
            _keep_latest(run.valid, rec)


def _read_eval(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            result = json.load(fh)
        result["metrics"]["overall"]["mean"]["mrr"]
        result["protocol"]["hits_at"]
    except ValueError:
        raise TbgError(f"{path}: not valid JSON") from None
    except (KeyError, TypeError):
        raise TbgError(f"{path}: not a `tbg eval` result (no metrics.overall.mean.mrr / protocol.hits_at)") from None
    return result


def load_run(save_dir: str) -> Run:
    """Read a save_dir; a dir without metrics, eval results or checkpoints is an error."""
    run = Run(save_dir)
    metrics = metrics_path(save_dir)
    if os.path.isfile(metrics):
        _read_metrics(metrics, run)
    else:
        run.notes.append(f"no {METRICS}: no training curves")
    for split in EVAL_SPLITS:
        path = eval_result_path(save_dir, split)
        if os.path.isfile(path):
            run.evals[split] = _read_eval(path)
    latest = CheckpointStore(save_dir).latest()
    if latest is not None:
        run.checkpoint, run.checkpoint_name = latest.progress, latest.name
    if not (os.path.isfile(metrics) or run.evals or latest is not None):
        raise TbgError(f"{save_dir}: no run here (no {METRICS}, eval_<split>.json or checkpoint); run `tbg train`")
    if os.path.isfile(metrics) and not run.train:
        run.notes.append(f"{METRICS} holds no training record yet")
    if os.path.isfile(metrics) and not run.valid:
        run.notes.append(f"{METRICS} holds no validation record (no valid split, or eval_log_every_n not reached)")
    if not run.evals:
        run.notes.append("no eval_<split>.json: run `tbg eval` for ranking metrics and the rank distribution")
    last_step = run.checkpoint.get("step") if run.checkpoint else None
    for split, result in run.evals.items():
        step = result.get("checkpoint", {}).get("progress", {}).get("step")
        if last_step is not None and step != last_step:
            run.notes.append(f"eval_{split}.json ranks the checkpoint of step {step}; the latest is step {last_step}")
        if not all("rank_histogram" in result["metrics"]["overall"].get(s, {}) for s in ("lhs", "rhs")):
            run.notes.append(f"eval_{split}.json has no rank histogram (written by an older tbg eval; run it again)")
    return run


# ----------------------------------------------------------------------------- what is drawn


def _line(records: list[dict[str, Any]], key: str, t0: float, by_time: bool) -> tuple[list[float], list[float]]:
    have = [r for r in records if r.get(key) is not None and (not by_time or r.get("time") is not None)]
    return [r["time"] - t0 if by_time else r["step"] for r in have], [r[key] for r in have]


def _curves(run: Run) -> list[Picture]:
    stamps = [r["time"] for r in run.train + run.valid if r.get("time") is not None]
    t0 = min(stamps) if stamps else 0.0
    seconds = "wall-clock s since the first record"
    out = []
    for name, title, key, unit in (
        ("train_loss", "Training loss", "loss", "loss per edge"),
        ("train_speed", "Training speed", "edges_per_s", "edges/s"),
    ):
        if run.train:
            out.append(Picture(name, title, [
                Panel(f"{title} by step", "step", unit, {key: _line(run.train, key, t0, False)}),
                Panel(f"{title} by time", seconds, unit, {key: _line(run.train, key, t0, True)}),
            ]))  # fmt: skip
    if run.valid:
        loss = {"val_loss": _line(run.valid, "val_loss", t0, False)}
        panels = [Panel("Validation loss", "step", "loss per edge", loss)]
        keys = {k for r in run.valid for k in r if k == "valid_mrr" or k.startswith("valid_hits@")}
        ranked = sorted(keys, key=lambda k: (k != "valid_mrr", len(k), k))  # mrr, hits@1, hits@3, hits@10
        if ranked:
            series = {k.removeprefix("valid_"): _line(run.valid, k, t0, False) for k in ranked}
            panels.append(Panel("Validation ranking (sampled candidates)", "step", "MRR / Hits@k", series))
        out.append(Picture("validation", "Validation", panels))
    return out


def _protocol(result: dict[str, Any]) -> str:
    proto = result["protocol"]
    kind = "SAMPLED candidates" if proto.get("candidates") == "sampled" else "all entities"
    return f"{kind}, {'filtered' if proto.get('filtered') else 'raw'}"


def _eval_pictures(split: str, result: dict[str, Any]) -> list[Picture]:
    hits = [f"hits@{k}" for k in result["protocol"]["hits_at"]]
    per_rel = result["metrics"].get("per_relation", {})
    names = sorted(per_rel, key=lambda n: -per_rel[n]["mean"]["count"])[:MAX_BARS]
    names = [n for n in per_rel if n in names]  # the eval's relation order
    title = f"eval {split} ({_protocol(result)}): "
    shown = "" if len(names) == len(per_rel) else f" ({len(names)} of {len(per_rel)} relations, most edges)"
    groups = ["overall", *names]
    blocks = [result["metrics"]["overall"], *(per_rel[n] for n in names)]
    positions = [float(i) for i in range(len(groups))]
    bars = {key: (positions, [float(b["mean"][key]) for b in blocks]) for key in ("mrr", *hits)}
    pictures = [Picture(f"eval_{split}_relations", title + "per relation", [
        Panel(f"MRR and Hits@k per relation{shown}", "relation", "mean of lhs and rhs", bars, "bar", groups),
    ])]  # fmt: skip
    overall = result["metrics"]["overall"]
    if all(overall[side].get("rank_histogram", {}).get("counts") for side in ("lhs", "rhs")):
        stairs = {}
        for side in ("lhs", "rhs"):
            h = overall[side]["rank_histogram"]
            stairs[side] = ([float(e) for e in h["edges"]], [float(c) for c in h["counts"]])
        pictures.append(Picture(f"eval_{split}_ranks", title + "rank distribution", [
            Panel("Rank distribution (realistic ranks, power-of-two bins)", "rank", "queries", stairs, "stairs",
                  xlog=True),
        ]))  # fmt: skip
    return pictures


def report_pictures(run: Run) -> list[Picture]:
    """Every picture the report draws, with the exact series of each panel."""
    out = _curves(run)
    for split, result in run.evals.items():
        out += _eval_pictures(split, result)
    return out


# ----------------------------------------------------------------------------- drawing and writing


def _draw(picture: Picture) -> bytes:
    from matplotlib.figure import Figure

    wide = max((len(p.categories or ()) for p in picture.panels), default=0)
    width = max(6.0, 0.45 * wide * max(len(p.series) for p in picture.panels) / 2)
    fig = Figure(figsize=(width * len(picture.panels), 4.2), layout="constrained")
    fig.suptitle(picture.title)
    for ax, panel in zip(fig.subplots(1, len(picture.panels), squeeze=False)[0], picture.panels):
        if panel.kind == "bar":
            step = 0.8 / max(1, len(panel.series))
            for i, (label, (x, y)) in enumerate(panel.series.items()):
                ax.bar([v + (i - (len(panel.series) - 1) / 2) * step for v in x], y, step, label=label)
            ax.set_xticks(range(len(panel.categories or ())), panel.categories or (), rotation=30, ha="right")
            ax.set_ylim(0, 1)
        for label, (x, y) in panel.series.items():
            if panel.kind == "line":
                ax.plot(x, y, marker="." if len(x) < 50 else None, label=label)
            elif panel.kind == "stairs":
                ax.stairs(y, x, label=label)
        if panel.xlog:
            ax.set_xscale("log", base=2)
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        ax.grid(alpha=0.3)
        if len(panel.series) > 1:
            ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"


def _headline(run: Run) -> list[tuple[str, str]]:
    rows = []
    if run.checkpoint is not None:
        c = run.checkpoint
        rows.append(("latest checkpoint", f"{run.checkpoint_name}: step {c.get('step')}, epoch {c.get('epoch')}"))
    if run.train:
        last, speeds = run.train[-1], sorted(r["edges_per_s"] for r in run.train if r.get("edges_per_s") is not None)
        first = _fmt(run.train[0]["loss"])
        rows.append(("training loss", f"{_fmt(last['loss'])} at step {last['step']} (first record {first})"))
        if speeds:
            rows.append(("edges/s", f"median {_fmt(speeds[len(speeds) // 2], 0)} over {len(speeds)} records"))
        stamps = [r["time"] for r in run.train if r.get("time") is not None]
        if len(stamps) > 1:
            rows.append(("logged wall-clock span", f"{stamps[-1] - stamps[0]:,.1f} s"))
    if run.valid:
        last = run.valid[-1]
        rows.append(("validation loss", f"{_fmt(last['val_loss'])} at step {last['step']}"))
        if "valid_mrr" in last:
            rows.append(("validation MRR (sampled)", _fmt(last["valid_mrr"])))
    for split, result in run.evals.items():
        m = result["metrics"]["overall"]["mean"]
        hits = ", ".join(f"H@{k} {_fmt(m.get(f'hits@{k}'))}" for k in result["protocol"]["hits_at"])
        edges = result.get("counts", {}).get("edges")
        numbers = f"MRR {_fmt(m['mrr'])}, {hits}, MR {_fmt(m.get('mean_rank'), 1)}, AUC {_fmt(m.get('auc'))}"
        rows.append((f"eval {split} ({_protocol(result)}, {edges} edges)", numbers))
    return rows


def summary_markdown(run: Run, pictures: list[Picture]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    lines = [f"# Run report: {run.save_dir}", "", f"Written {stamp} by `tbg report`.", ""]
    head = _headline(run)
    if head:
        lines += ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in head), ""]
    if pictures:
        lines += ["## Pictures", "", *(f"- [{p.title}]({p.name}.png)" for p in pictures), ""]
        for p in pictures:
            lines += [f"### {p.title}", "", f"![{p.title}]({p.name}.png)", ""]
    if run.notes:
        lines += ["## Missing or doubtful", "", *(f"- {n}" for n in run.notes), ""]
    return "\n".join(lines)


def write_report(save_dir: str) -> tuple[str, list[str], list[str]]:
    """Draw every picture the run allows into ``save_dir/report/`` (each file temp + rename), then index.md;
    pictures of an earlier report that cannot be drawn now are removed.  Returns (index path, PNGs, notes)."""
    run = load_run(save_dir)
    pictures = report_pictures(run)
    out = os.path.join(save_dir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    written = []
    for picture in pictures:
        path = os.path.join(out, f"{picture.name}.png")
        atomic_write_bytes(path, _draw(picture))
        written.append(path)
    for name in os.listdir(out):
        if name.endswith(".png") and os.path.join(out, name) not in written:
            os.remove(os.path.join(out, name))
    index = os.path.join(out, INDEX)
    atomic_write_text(index, summary_markdown(run, pictures))
    return index, written, run.notes


def report_run(save_dir: str, prog: str = "tbg report") -> int:
    """Write the report and say where (the entry point of `tbg report` and of `training.report`)."""
    index, written, notes = write_report(save_dir)
    print(f"{prog}: wrote {len(written)} pictures and {index}", file=sys.stderr)
    for note in notes:
        print(f"{prog}: {note}", file=sys.stderr)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Reads save_dir/metrics.jsonl, save_dir/eval_<split>.json and the latest checkpoint."


def run(args: argparse.Namespace) -> int:
    from tbg.config import load_config

    return report_run(load_config(args.config, args.overrides).training.save_dir)

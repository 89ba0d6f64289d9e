"""Read a trial's graph dir, checkpoint, export or eval output independently of tbg and compare it with the
reference run's: equal, different, or non-finite.  Only h5py/numpy/json are used (no tbg code), so a bug in
tbg's readers cannot hide a difference."""

from __future__ import annotations

import json
import math
import os
import re

import h5py
import numpy as np

PROGRESS_KEYS = ("step", "epoch", "bucket_index", "position", "edges_seen", "finished")
LEFTOVER = re.compile(r"(\.tmp-|\.old-|\.tmp-link$)")


def h5_arrays(path: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[...]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def _tree_arrays(root: str) -> dict[str, np.ndarray]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".h5"):
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                for k, v in h5_arrays(os.path.join(dirpath, f)).items():
                    out[f"{rel}:{k}"] = v
    return out


def _nonfinite(arrays: dict[str, np.ndarray]) -> list[str]:
    return [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]


def _diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in a or k not in b or a[k].shape != b[k].shape or not np.array_equal(a[k], b[k])]


def latest_version(save_dir: str) -> str | None:
    """The committed version `latest` names, or None when there is none (unreadable counts as none)."""
    try:
        with open(os.path.join(save_dir, "checkpoints", "latest"), encoding="utf-8") as fh:
            name = fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    path = os.path.join(save_dir, "checkpoints", name)
    return path if name and os.path.isfile(os.path.join(path, "progress.json")) else None


def committed_step(save_dir: str) -> int:
    path = latest_version(save_dir)
    if path is None:
        return 0
    try:
        with open(os.path.join(path, "progress.json"), encoding="utf-8") as fh:
            return int(json.load(fh).get("step", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def compare_checkpoint(save_dir: str, ref_save: str) -> tuple[str, str]:
    """("equal" | "nonfinite" | "different" | "missing", detail) for the latest versions."""
    mine, ref = latest_version(save_dir), latest_version(ref_save)
    if mine is None:
        return "missing", f"{save_dir}: no readable latest checkpoint"
    try:
        with open(os.path.join(mine, "progress.json")) as fh:
            p = json.load(fh)
        with open(os.path.join(ref, "progress.json")) as fh:
            q = json.load(fh)
        arrays = _tree_arrays(mine)
    except (OSError, ValueError) as exc:
        return "different", f"{mine}: unreadable after exit 0: {exc}"
    bad = _nonfinite(arrays)
    if bad:
        return "nonfinite", f"{mine}: non-finite values in {bad[:3]}"
    if any(p.get(k) != q.get(k) for k in PROGRESS_KEYS):
        got = {k: p.get(k) for k in PROGRESS_KEYS}
        want = {k: q.get(k) for k in PROGRESS_KEYS}
        return "different", f"{mine}/progress.json {got} != reference {want}"
    diff = _diff(arrays, _tree_arrays(ref))
    if diff:
        return "different", f"{mine}: arrays differ from the uninterrupted run: {diff[:3]}"
    return "equal", ""


def _manifest(path: str) -> dict:
    with open(os.path.join(path, "manifest.json")) as fh:
        m = json.load(fh)
    for k in ("created", "import_id", "config_fingerprint", "checksum"):  # differ per import by design
        m.pop(k, None)
    for entry in m.get("lineage", []):  # each import/append records its own id and time
        for k in ("created", "import_id"):
            entry.pop(k, None)
    for split in m.get("splits", {}).values():
        for src in split.get("sources", []):
            src["path"] = os.path.basename(src.get("path", ""))
    return m


def compare_graph(graph: str, ref_graph: str) -> tuple[str, str]:
    if not os.path.isfile(os.path.join(graph, "manifest.json")):
        return "missing", f"{graph}: no manifest.json"
    try:
        same_manifest = _manifest(graph) == _manifest(ref_graph)
        diff = _diff(_tree_arrays(graph), _tree_arrays(ref_graph))
    except (OSError, ValueError) as exc:
        return "different", f"{graph}: unreadable after exit 0: {exc}"
    if not same_manifest:
        return "different", f"{graph}/manifest.json differs from the reference import"
    if diff:
        return "different", f"{graph}: datasets differ from the reference import: {diff[:3]}"
    return "equal", ""


def _export_files(out: str) -> dict[str, object]:
    files: dict[str, object] = {}
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name.endswith(".json"):
            with open(path) as fh:
                doc = json.load(fh)
            doc.pop("checkpoint", None)
            files[name] = doc
        else:
            with open(path, "rb") as fh:
                files[name] = fh.read()
    return files


def compare_export(out: str, ref_out: str) -> tuple[str, str]:
    if not os.path.isdir(out):
        return "missing", f"{out}: no export dir"
    try:
        files = _export_files(out)
    except (OSError, ValueError) as exc:
        return "different", f"{out}: unreadable after exit 0: {exc}"
    for name, data in files.items():
        if isinstance(data, bytes) and re.search(rb"(?i)(\bnan\b|\binf\b)", data):
            return "nonfinite", f"{out}/{name}: non-finite values exported"
    ref = _export_files(ref_out)
    if files != ref:
        names = sorted(n for n in set(files) | set(ref) if files.get(n) != ref.get(n))
        return "different", f"{out}: differs from the reference export in {names}"
    return "equal", ""


def _numbers(doc, prefix=""):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _numbers(v, f"{prefix}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _numbers(v, f"{prefix}[{i}]")
    elif isinstance(doc, float):
        yield prefix, doc


def compare_eval(path: str, ref_path: str) -> tuple[str, str]:
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        return "missing", f"{path}: {exc}"
    got = dict(_numbers(doc.get("metrics", doc)))
    with open(ref_path) as fh:
        want = dict(_numbers(json.load(fh).get("metrics", {})))
    bad = [k for k, v in got.items() if not math.isfinite(v)]
    if bad:
        return "nonfinite", f"{path}: non-finite metrics {bad[:3]}"
    wrong = [k for k in want if k not in got or abs(got[k] - want[k]) > 1e-9 * max(1.0, abs(want[k]))]
    if wrong:
        return "different", f"{path}: metrics differ from the reference eval: {wrong[:3]}"
    return "equal", ""


def metrics_problems(save_dir: str) -> str:
    """metrics.jsonl must be JSON per line with no training step logged twice."""
    path = os.path.join(save_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return ""
    seen: set[tuple] = set()
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            try:
                rec = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            except ValueError as exc:
                return f"{path}:{n}: not JSON ({exc})"
            key = (rec.get("kind", rec.get("split", "train")), rec.get("step"), "loss" in rec)
            if key in seen:
                return f"{path}:{n}: step {rec.get('step')} logged twice (after a resume)"
            seen.add(key)
    return ""


def leftovers(root: str) -> list[str]:
    found = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            if LEFTOVER.search(name):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)

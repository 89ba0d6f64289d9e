"""The fault trials and how their outcome is classified.

Every trial works on a fresh copy of a scenario, injects one fault, runs tbg (and reruns it where a rerun
is the user's way out) and ends in one outcome:

- ``recovered``: the command (or its rerun) succeeds and the result equals the uninterrupted reference run
  (bit for bit for checkpoints: one Hogwild worker is reproducible), or the fault was provably harmless;
- ``clear_error``: exit 2 with one ``tbg <cmd>: error: ...`` line and no traceback;
- ``traceback``: a traceback, or any other non-zero exit without one clear line (a crash, a signal);
- ``silent_loss``: exit 0 but committed work was discarded (a fresh start over a committed checkpoint, a
  deleted file silently replaced by fresh state, a second import replacing the first without --overwrite);
- ``corruption``: exit 0 with wrong or non-finite data committed or exported;
- ``hang``: ran past the time limit.

Two side checks add findings without changing the outcome: ``leftovers`` (temp/old files after a successful
command) and ``bookkeeping`` (metrics.jsonl not JSON, or a step logged twice after a resume).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

import compare
import h5py
import harness
import scenarios
import yaml

ERROR_LINE = re.compile(r"^tbg [\w-]+: error: \S")
TRAIN = ["train", "cfg.yaml", "--no-progress"]
IMPORT = ["import", "cfg.yaml", "--no-progress"]
EXPORT = ["export", "cfg.yaml", "--format", "tsv", "--out", "out"]
EVAL = ["eval", "cfg.yaml", "--split", "valid", "--json-out", "eval.json"]


@dataclass
class Trial:
    index: int
    kind: str
    scenario: str
    seed: int


@dataclass
class Outcome:
    outcome: str
    detail: str = ""
    reproducer: dict = field(default_factory=dict)
    extra: list[tuple[str, str]] = field(default_factory=list)  # (class, detail): leftovers, bookkeeping
    stderr: str = ""  # the end of a failing command's stderr


def status(r: harness.Result) -> str:
    """ok | clear | traceback | hang"""
    if r.timed_out:
        return "hang"
    if "Traceback (most recent call last)" in r.stderr:
        return "traceback"
    if r.rc == 0:
        return "ok"
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if "error" in x.lower()]
    if r.rc == 2 and lines and ERROR_LINE.match(lines[-1]) and len(errors) == 1:
        return "clear"
    return "traceback"


def _tail(r: harness.Result) -> str:
    """The last stderr line and, for a traceback, the innermost frame."""
    lines = [x.strip() for x in r.stderr.splitlines() if x.strip()]
    frames = [x for x in lines if x.startswith('File "')]
    return " | ".join(([frames[-1]] if frames else []) + lines[-1:])[-600:]


def _failure_of(r: harness.Result) -> Outcome | None:
    """An outcome for a run that did not exit 0 or with one clear line; None otherwise."""
    st = status(r)
    if st == "hang":
        return Outcome("hang", f"`{r.command}` ran past {r.wall_s:.0f} s")
    if st == "traceback":
        return Outcome("traceback", f"`{r.command}` exit {r.rc}: {_tail(r)}", stderr=r.stderr[-2500:])
    return None


def _by_compare(result: tuple[str, str], deleted: bool = False) -> Outcome:
    verdict, detail = result
    if verdict == "equal":
        return Outcome("recovered")
    if verdict == "different" and deleted:
        return Outcome("silent_loss", detail)
    return Outcome("corruption", detail)


def _side_checks(root: str, out: Outcome, save_dir: str | None = None) -> None:
    if out.outcome != "recovered":
        return
    left = [p for p in compare.leftovers(root) if not p.startswith("src")]
    if left:
        out.extra.append(("leftovers", f"{root}: left behind {left[:4]}"))
    if save_dir:
        problem = compare.metrics_problems(save_dir)
        if problem:
            out.extra.append(("bookkeeping", problem))


def _kill_plan(rng: random.Random, wall: float, ops: list[str]) -> harness.KillPlan:
    if ops and rng.random() < 0.6:
        return harness.KillPlan(op_index=rng.randint(1, len(ops)), when=rng.choice(["before", "after"]))
    return harness.KillPlan(delay_s=rng.uniform(0.0, wall * 1.1))


def _train_verdict(r: harness.Result, root: str, s: scenarios.Scenario, committed: int, deleted=False) -> Outcome:
    fail = _failure_of(r)
    if fail:
        return fail
    if status(r) == "clear":
        return Outcome("clear_error", r.stderr.strip().splitlines()[-1])
    if committed > 0 and "fresh start" in r.stderr:
        return Outcome("silent_loss", f"a committed checkpoint at step {committed} was ignored: fresh start")
    return _by_compare(compare.compare_checkpoint(os.path.join(root, "save"), s.ref_save), deleted)


def _output_verdict(r: harness.Result, verdict: tuple[str, str], deleted: bool = False) -> Outcome:
    """For import/export/eval reruns: exit 0 or a refusal whose existing output is whole."""
    fail = _failure_of(r)
    if fail:
        return fail
    if status(r) == "clear" and verdict[0] == "missing":
        return Outcome("clear_error", r.stderr.strip().splitlines()[-1])
    if status(r) == "clear" and verdict[0] == "equal":
        return Outcome("recovered")
    return _by_compare(verdict, deleted)


# ---------------------------------------------------------------------------------------------- kill -9


def kill_trial(t: Trial, s: scenarios.Scenario, root: str, timeout: float) -> Outcome:
    rng = random.Random(t.seed)
    command = t.kind.split("_", 1)[1]
    argv = {"import": IMPORT, "train": TRAIN, "export": EXPORT}[command]
    scenarios.copy_state(s, root, save=s.ref_save if command == "export" else None, graph=command != "import")
    plan = _kill_plan(rng, s.walls[command], s.ops[command])
    first = harness.run_tbg(argv, root, plan=plan, timeout_s=timeout)
    repro = {"command": f"cd <trial> && tbg {' '.join(argv)}", "fault": plan.describe(), "then": "rerun it"}
    if plan.op_index is not None and plan.op_index <= len(s.ops[command]):
        repro["op"] = s.ops[command][plan.op_index - 1]
    if not first.killed:
        fail = _failure_of(first)
        if fail:
            fail.reproducer = repro
            return fail
    committed = compare.committed_step(os.path.join(root, "save"))
    second = harness.run_tbg(argv, root, timeout_s=timeout)
    if command == "train":
        out = _train_verdict(second, root, s, committed)
    elif command == "import":
        out = _output_verdict(second, compare.compare_graph(os.path.join(root, "graph"), os.path.join(s.root, "graph")))
    else:
        out = _output_verdict(second, compare.compare_export(os.path.join(root, "out"), s.ref_export))
    out.reproducer = repro
    _side_checks(root, out, os.path.join(root, "save") if command == "train" else None)
    return out


# ------------------------------------------------------------------------------------ corrupt / truncate / delete


def file_kind(rel: str) -> str:
    name = os.path.basename(rel)
    if rel.startswith("graph/"):
        if name == "manifest.json":
            return "manifest.json"
        return "entities/*.h5" if "/entities/" in rel else f"{rel.split('/')[1]}/edges_*.h5"
    if name in ("latest", "metrics.jsonl", "progress.json", "state.pt", "config.yaml", "relations.h5"):
        return name
    return "partitions/*.h5" if "/partitions/" in rel else "embeddings/*.h5"


def candidate_files(root: str) -> dict[str, list[str]]:
    """Files a trial may damage, by kind: the graph dir, the latest checkpoint, swap files, metrics."""
    files: list[str] = []
    for top in ("graph", "save/partitions"):
        for dirpath, _d, names in os.walk(os.path.join(root, top)):
            files += [os.path.relpath(os.path.join(dirpath, n), root) for n in names]
    latest = compare.latest_version(os.path.join(root, "save"))
    if latest:
        for dirpath, _d, names in os.walk(latest):
            files += [os.path.relpath(os.path.join(dirpath, n), root) for n in names]
    for extra in ("save/checkpoints/latest", "save/metrics.jsonl"):
        if os.path.exists(os.path.join(root, extra)):
            files.append(extra)
    kinds: dict[str, list[str]] = {}
    for f in sorted(files):
        kinds.setdefault(file_kind(f), []).append(f)
    return kinds


def _data_region(path: str, rng: random.Random) -> tuple[int, int] | None:
    """(offset, length) of one dataset's stored bytes in an HDF5 file."""
    regions = []
    try:
        with h5py.File(path, "r") as f:

            def visit(_name, obj):
                if isinstance(obj, h5py.Dataset) and obj.size:
                    off = obj.id.get_offset()
                    if off is not None:
                        regions.append((off, obj.id.get_storage_size()))
                    elif obj.chunks:
                        info = obj.id.get_chunk_info(0)
                        regions.append((info.byte_offset, info.size))

            f.visititems(visit)
    except (OSError, ValueError):
        return None
    return rng.choice(regions) if regions else None


def mutate(path: str, rng: random.Random) -> dict:
    """Damage one file; returns what was done (the reproducer)."""
    size = os.path.getsize(path)
    choices = ["byte", "truncate", "delete", "empty"] + (["data_byte"] * 2 if path.endswith(".h5") else [])
    if not path.endswith((".h5", ".pt")):
        choices.append("non_utf8")
    how = rng.choice(choices)
    if how == "delete":
        os.remove(path)
        return {"mutation": "delete"}
    if how in ("empty", "truncate"):
        at = 0 if how == "empty" else rng.randrange(max(size, 1))
        os.truncate(path, at)
        return {"mutation": "truncate", "offset": at}
    if how == "non_utf8":
        at = rng.randrange(max(size, 1))
        data = bytes([0xFF, 0xFE, rng.randrange(0x80, 0x100)])
    else:
        region = _data_region(path, rng) if how == "data_byte" else None
        lo, n = region if region else (0, size)
        n = max(n, 1)
        at = lo + rng.randrange(n)
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    with open(path, "r+b") as fh:
        fh.seek(min(at, size))
        fh.write(data)
    return {"mutation": how, "offset": at, "bytes": data.hex()}


def corrupt_trial(t: Trial, s: scenarios.Scenario, root: str, timeout: float) -> Outcome:
    rng = random.Random(t.seed)
    command = rng.choice(["train", "train", "eval", "export"])
    scenarios.copy_state(s, root, save=s.mid_save if command == "train" else s.ref_save)
    kinds = candidate_files(root)
    kind = rng.choice(sorted(kinds))
    rel = rng.choice(kinds[kind])
    done = mutate(os.path.join(root, rel), rng)
    argv = {"train": TRAIN, "eval": EVAL, "export": EXPORT}[command]
    repro = {"command": f"cd <trial> && tbg {' '.join(argv)}", "file": rel, "file_kind": kind, **done}
    committed = compare.committed_step(os.path.join(root, "save"))
    r = harness.run_tbg(argv, root, timeout_s=timeout)
    deleted = done["mutation"] == "delete" or done.get("offset") == 0 and done["mutation"] == "truncate"
    if command == "train":
        out = _train_verdict(r, root, s, committed, deleted)
    elif command == "eval":
        out = _output_verdict(r, compare.compare_eval(os.path.join(root, "eval.json"), s.ref_eval), deleted)
    else:
        out = _output_verdict(r, compare.compare_export(os.path.join(root, "out"), s.ref_export), deleted)
    out.reproducer = repro
    return out


# ---------------------------------------------------------------------------------------------- disk full


def tmpfs_available(probe_dir: str) -> bool:
    os.makedirs(probe_dir, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", probe_dir], capture_output=True)
    if ok.returncode != 0:
        return False
    subprocess.run(["umount", probe_dir], capture_output=True)
    return True


def _du(path: str) -> int:
    total = 0
    for dirpath, _d, names in os.walk(path):
        total += sum(os.path.getsize(os.path.join(dirpath, n)) + 4096 for n in names) + 4096
    return total


def diskfull_trial(t: Trial, s: scenarios.Scenario, root: str, timeout: float) -> Outcome:
    rng = random.Random(t.seed)
    command = rng.choice(["import", "train", "export"])
    scenarios.copy_state(s, root, save=s.ref_save if command == "export" else None, graph=command != "import")
    with open(os.path.join(root, "cfg.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    need = {"import": os.path.join(s.root, "graph"), "train": s.ref_save, "export": s.ref_export}[command]
    size_kb = max(4, int(_du(need) * rng.uniform(0.02, 0.9) / 1024))
    fs = os.path.join(root, "fs")
    os.makedirs(fs)
    argv = {"import": IMPORT, "train": TRAIN, "export": [*EXPORT[:-1], "fs/out"]}[command]
    if command == "import":
        cfg["graph"]["dir"] = "fs/graph"
    elif command == "train":
        cfg["training"]["save_dir"] = "fs/save"
    scenarios.write_config(os.path.join(root, "cfg.yaml"), cfg)
    repro = {"command": f"cd <trial> && tbg {' '.join(argv)}", "fault": f"output on a {size_kb} KiB tmpfs (ENOSPC)",
             "then": "remount with room and rerun"}  # fmt: skip
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", fs], check=True, capture_output=True)
    try:
        first = harness.run_tbg(argv, root, timeout_s=timeout)
        fail = _failure_of(first)
        if fail is None:
            subprocess.run(["mount", "-o", "remount,size=64m", fs], check=True, capture_output=True)
            second = harness.run_tbg(argv, root, timeout_s=timeout)
            if command == "train":
                save = os.path.join(fs, "save")
                verdict = compare.compare_checkpoint(save, s.ref_save)
                fail = _failure_of(second) or _output_verdict(second, verdict)
                if fail.outcome == "recovered":
                    _side_checks(fs, fail, save)
            elif command == "import":
                verdict = compare.compare_graph(os.path.join(fs, "graph"), os.path.join(s.root, "graph"))
                fail = _output_verdict(second, verdict)
                _side_checks(fs, fail)
            else:
                fail = _output_verdict(second, compare.compare_export(os.path.join(fs, "out"), s.ref_export))
                _side_checks(fs, fail)
    finally:
        subprocess.run(["umount", "-l", fs], capture_output=True)
    fail.reproducer = repro
    return fail


# ------------------------------------------------------------------------------------- concurrent writers


def concurrent_trial(t: Trial, s: scenarios.Scenario, root: str, timeout: float) -> Outcome:
    rng = random.Random(t.seed)
    command = rng.choice(["train", "train", "import", "export"])
    argv = {"import": IMPORT, "train": TRAIN, "export": EXPORT}[command]
    scenarios.copy_state(s, root, save=s.ref_save if command == "export" else None, graph=command != "import")
    delay = rng.uniform(0.0, 0.5 * s.walls[command])
    repro = {"command": f"cd <trial> && tbg {' '.join(argv)} & sleep {delay:.3f}; tbg {' '.join(argv)}"}
    a = harness.start_tbg(argv, root)
    time.sleep(delay)
    b = harness.start_tbg(argv, root)
    ra, rb = harness.wait_tbg(a, timeout), harness.wait_tbg(b, timeout)
    out = _failure_of(ra) or _failure_of(rb)
    if out is None:
        both_ok = ra.rc == 0 and rb.rc == 0
        if command == "train":
            both_trained = both_ok and not any("already finished" in r.stderr for r in (ra, rb))
            out = _by_compare(compare.compare_checkpoint(os.path.join(root, "save"), s.ref_save))
            if out.outcome == "recovered" and both_trained:
                out.detail = "both trainers ran to exit 0 on one save_dir (no lock), result happened to match"
            _side_checks(root, out, os.path.join(root, "save"))
        elif both_ok:
            what = "graph dir" if command == "import" else "export dir"
            out = Outcome("silent_loss", f"both writers exited 0: the second replaced the first's {what} "
                          "without --overwrite (no lock)")  # fmt: skip
        elif command == "import":
            out = _by_compare(compare.compare_graph(os.path.join(root, "graph"), os.path.join(s.root, "graph")))
        else:
            out = _by_compare(compare.compare_export(os.path.join(root, "out"), s.ref_export))
    out.reproducer = repro
    return out


# ------------------------------------------------------------------------------ readers during training


def _reference_of(s: scenarios.Scenario, what: str, version: str, timeout: float) -> str:
    """The reference run's export or eval of one committed version (made once, on demand)."""
    base = os.path.dirname(s.ref_save)
    checkpoint = ["--checkpoint", f"save/checkpoints/{version}"]
    if what == "export":
        out = os.path.join(base, f"out-{version}")
        argv = ["export", "cfg.yaml", "--format", "tsv", "--out", os.path.basename(out), *checkpoint]
    else:
        out = os.path.join(base, f"eval-{version}.json")
        argv = [*EVAL[:-1], os.path.basename(out), *checkpoint]
    if not os.path.exists(out):
        r = harness.run_tbg(argv, base, timeout_s=timeout)
        if r.rc != 0:
            raise RuntimeError(f"reference {what} of {version} failed: {r.stderr[-1000:]}")
    return out


def reference_export(s: scenarios.Scenario, version: str, timeout: float) -> str:
    return _reference_of(s, "export", version, timeout)


LOCKED = "in use by"
NOT_YET = "no committed checkpoint"


def reader_trial(t: Trial, s: scenarios.Scenario, root: str, timeout: float) -> Outcome:
    """A reader while `tbg train` commits and prunes (checkpoint_max_to_keep 1): `tbg export` or `tbg eval`
    must read one whole committed version (equal to the reference's export/eval of that version: the version
    it reads is pinned, so pruning cannot take it away), or say that nothing is committed yet.  Or `tbg import
    --overwrite` of the graph dir being trained on, with another graph.seed (a different shuffle, so a trainer
    reading files of both imports trains something else): it must be refused (the trainer holds the graph
    dir's reader lock) or come after the trainer is done.  Either way the trained checkpoint must equal the
    reference's."""
    rng = random.Random(t.seed)
    reader_kind = rng.choice(["export", "eval", "reimport"])
    scenarios.copy_state(s, root)
    with open(os.path.join(root, "cfg.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    cfg["training"]["checkpoint_max_to_keep"] = 1
    scenarios.write_config(os.path.join(root, "cfg.yaml"), cfg)
    delay = rng.uniform(0.2, 1.0) * s.walls["train"]
    reimport = [*IMPORT, "--overwrite", "--set", f"graph.seed={cfg['graph'].get('seed', 0) + 1}"]
    argv = {"export": EXPORT, "eval": EVAL, "reimport": reimport}[reader_kind]
    repro = {"command": f"cd <trial> && tbg {' '.join(TRAIN)} & sleep {delay:.3f}; tbg {' '.join(argv)}",
             "config": "training.checkpoint_max_to_keep: 1"}  # fmt: skip
    trainer = harness.start_tbg(TRAIN, root, record_ops=True)
    time.sleep(delay)
    reader = harness.run_tbg(argv, root, timeout_s=timeout, record_ops=True)
    trained = harness.wait_tbg(trainer, timeout)
    out = _failure_of(reader) or _failure_of(trained)
    if out is None and reader_kind == "reimport" and status(reader) == "ok" and _replaced_under(reader, trained):
        out = Outcome("corruption", "`tbg import --overwrite` replaced the graph dir while the trainer still had it")
    if out is None and status(trained) == "clear":
        last = trained.stderr.strip().splitlines()[-1]
        out = Outcome("clear_error", last)  # the import held the graph dir when the trainer started
        if reader_kind != "reimport" or LOCKED not in last:
            out = Outcome("traceback", f"`tbg train` failed beside a reader: {last}", stderr=trained.stderr[-2500:])
    if out is None:
        out = _reader_verdict(s, root, reader_kind, reader, timeout)
        if out.outcome in ("recovered", "clear_error"):  # whatever the reader did, training must be right
            trained_out = _by_compare(compare.compare_checkpoint(os.path.join(root, "save"), s.ref_save))
            if trained_out.outcome != "recovered":
                out = trained_out
                if reader_kind == "reimport" and status(reader) == "ok":
                    out.detail = f"the graph dir was re-imported under the running trainer: {out.detail}"
    out.reproducer = repro
    return out


def _replaced_under(imported: harness.Result, trained: harness.Result) -> bool:
    """Whether the import's commit (its rename of the new dir onto ``graph``) came before the trainer let go
    of the graph dir: its release of ``graph.lock`` (the last reader removes the file), else its last op."""
    commits = [t for op, t in zip(imported.ops, imported.op_times, strict=True)
               if op.split(" ", 1)[0] in ("rename", "replace") and op.rstrip("/").endswith("graph")]  # fmt: skip
    released = [t for op, t in zip(trained.ops, trained.op_times, strict=True) if op.endswith("graph.lock")]
    end = released[-1] if released else (trained.op_times[-1] if trained.op_times else 0.0)
    return bool(commits) and commits[-1] < end


def _reader_verdict(s: scenarios.Scenario, root: str, kind: str, reader: harness.Result, timeout: float) -> Outcome:
    last = reader.stderr.strip().splitlines()[-1] if reader.stderr.strip() else ""
    if kind == "reimport":
        out = Outcome("clear_error", last) if status(reader) == "clear" else Outcome("recovered")
        if status(reader) == "clear" and LOCKED not in last:
            out.extra.append(("reader_failures", f"import refused, but not for the trainer's lock: {last}"))
        return out  # (a successful import came after the trainer: its checkpoint shows it)
    if status(reader) == "clear":
        out = Outcome("clear_error", last)
        if NOT_YET not in last:  # a pinned version cannot vanish: any other error is the reader's failure
            out.extra.append(("reader_failures", f"`tbg {kind}` failed while training pruned: {last}"))
        return out
    try:
        if kind == "export":
            with open(os.path.join(root, "out", "export.json")) as fh:
                version = scenarios_version(json.load(fh))
            return _by_compare(compare.compare_export(os.path.join(root, "out"), reference_export(s, version, timeout)))
        with open(os.path.join(root, "eval.json")) as fh:
            version = scenarios_version({"checkpoint_version": json.load(fh)["checkpoint"]["version"]})
        ref = _reference_of(s, "eval", version, timeout)
        return _by_compare(compare.compare_eval(os.path.join(root, "eval.json"), ref))
    except (OSError, ValueError, KeyError) as exc:
        return Outcome("corruption", f"{kind} exited 0 but its output is unreadable: {exc}")


def scenarios_version(export_doc: dict) -> str:
    return f"v{int(export_doc['checkpoint_version']):010d}"


RUNNERS = {"kill_import": kill_trial, "kill_train": kill_trial, "kill_export": kill_trial, "corrupt": corrupt_trial,
           "diskfull": diskfull_trial, "concurrent": concurrent_trial, "reader": reader_trial}  # fmt: skip


def run_trial(t: Trial, s: scenarios.Scenario, root: str, timeout: float, keep: bool = False) -> Outcome:
    try:
        return RUNNERS[t.kind](t, s, root, timeout)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

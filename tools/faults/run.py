"""Fault-injection suite for tbg: kill -9, damaged files, a full disk and concurrent writers on tiny graphs.

    python tools/faults/run.py --trials 200 --seed 0          # the full run (docs/reliability.md)
    python tools/faults/run.py --fast                         # the CI subset (< 2 min on 2 cores)
    python tools/faults/run.py --trials 200 --seed 0 --only 17 # replay one trial of a run

Prints one JSON summary on stdout: trial counts per outcome and every failure with its reproducer.
Trial i of a run depends only on (seed, i), so ``--only`` replays it exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))  # the tbg tree this suite lives in

import scenarios  # noqa: E402
import trials  # noqa: E402

# one cycle of trial kinds: every kind appears in any 20 consecutive trials
CYCLE = ["kill_train", "corrupt", "kill_import", "corrupt", "kill_train", "concurrent", "corrupt", "kill_export",
         "diskfull", "corrupt", "kill_train", "corrupt", "kill_import", "concurrent", "kill_train", "corrupt",
         "kill_export", "diskfull", "reader", "kill_train"]  # fmt: skip
FAST_SCENARIOS = ["names_tsv_p2", "indices_pq_p1"]
OUTCOMES = ["recovered", "clear_error", "traceback", "silent_loss", "corruption", "hang"]
SUMMARY_KEY = {"recovered": "recovered", "clear_error": "clear_errors", "traceback": "tracebacks",
               "silent_loss": "silent_losses", "corruption": "corruptions", "hang": "hangs"}  # fmt: skip


def plan(n: int, seed: int, names: list[str]) -> list[trials.Trial]:
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        out.append(trials.Trial(i, CYCLE[i % len(CYCLE)], rng.choice(names), rng.randrange(2**32)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="number of trials (default 200; 40 with --fast)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="the CI subset: two scenarios, 40 trials")
    p.add_argument("--only", type=int, action="append", help="run only trial I of the plan (repeatable)")
    p.add_argument("--workdir", help="where to build scenarios and trials (default: a temp dir, removed)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per tbg command before it is a hang")
    p.add_argument("--keep", action="store_true", help="keep each trial's dir under --workdir for inspection")
    p.add_argument("--verbose", action="store_true", help="one line per trial on stderr")
    args = p.parse_args(argv)
    n = args.trials if args.trials is not None else (40 if args.fast else 200)
    names = FAST_SCENARIOS if args.fast else [s[0] for s in scenarios.SCENARIOS]
    todo = plan(n, args.seed, names)
    if args.only:
        todo = [t for t in todo if t.index in set(args.only)]
    base = args.workdir or tempfile.mkdtemp(prefix="tbg-faults-")
    os.makedirs(base, exist_ok=True)
    t0 = time.monotonic()
    counts = dict.fromkeys(OUTCOMES, 0)
    extra_counts = {"leftovers": 0, "bookkeeping": 0, "reader_failures": 0}
    failures: list[dict] = []
    skipped = 0
    try:
        built: dict[str, scenarios.Scenario] = {}
        spec = {s[0]: s for s in scenarios.SCENARIOS}
        tmpfs = trials.tmpfs_available(os.path.join(base, "tmpfs-probe"))
        for t in todo:
            if t.kind == "diskfull" and not tmpfs:
                skipped += 1
                continue
            if t.scenario not in built:
                name, mode, parts = spec[t.scenario]
                built[t.scenario] = scenarios.build(base, name, mode, parts, args.seed, args.timeout)
            root = os.path.join(base, f"trial-{t.index:04d}")
            started = time.monotonic()
            out = trials.run_trial(t, built[t.scenario], root, args.timeout, keep=args.keep and bool(args.workdir))
            counts[out.outcome] += 1
            for cls, _detail in out.extra:
                extra_counts[cls] += 1
            case = {"trial": t.index, "kind": t.kind, "scenario": t.scenario, "reproducer": out.reproducer,
                    "replay": f"python tools/faults/run.py --seed {args.seed} --trials {n}"
                    f"{' --fast' if args.fast else ''} --only {t.index}"}  # fmt: skip
            if out.outcome not in ("recovered", "clear_error"):
                failures.append({**case, "outcome": out.outcome, "detail": out.detail,
                                 **({"stderr": out.stderr} if out.stderr else {})})  # fmt: skip
            for cls, detail in out.extra:
                failures.append({**case, "outcome": cls, "detail": detail})
            if args.verbose:
                extra = "".join(f" +{c}" for c, _ in out.extra)
                print(f"trial {t.index:4d} {t.kind:12s} {t.scenario:14s} {out.outcome}{extra} "
                      f"({time.monotonic() - started:.1f} s) {out.detail[:160]}", file=sys.stderr)  # fmt: skip
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(trials.harness.LOG_DIR, ignore_errors=True)
    summary = {
        "trials": sum(counts.values()),
        **{SUMMARY_KEY[k]: v for k, v in counts.items()},
        **extra_counts,
        "skipped": skipped,
        "seed": args.seed,
        "fast": args.fast,
        "disk_full_trials": "tmpfs" if tmpfs else "skipped (cannot mount a tmpfs here)",
        "wall_s": round(time.monotonic() - t0, 1),
        "failures": failures,
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

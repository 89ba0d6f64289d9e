"""What a run reports as it goes: save_dir/metrics.jsonl (one JSON record per log or validation step) and the
tqdm bar on stderr.

Training records carry the mean loss per edge and the edges/s since the previous training record; the
per-step loss is summed on the device and read back only when a record is written (no sync per step).

Every line is strict JSON: a non-finite number is written as null and its key listed under ``nonfinite``
(e.g. ``"val_loss": null, "nonfinite": ["val_loss"]``).  A resumed run first cuts the file back to the step it
resumes from (:meth:`MetricsLog.cut_back`), so no step is logged twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch

from tbg.durable_files import atomic_write_bytes
from tbg.run_files import METRICS, json_line, metrics_path


def remove_metrics_leftovers(save_dir: str) -> None:
    """Remove ``metrics.jsonl.tmp-*`` left by a run killed while it cut the file back; the save_dir's lock
    holder calls this before training, when no other writer can be rewriting it."""
    if os.path.isdir(save_dir):
        for name in os.listdir(save_dir):
            if name.startswith(f"{METRICS}.tmp-"):
                os.remove(os.path.join(save_dir, name))


class MetricsLog:
    def __init__(
        self, save_dir: str, device: torch.device, show_bar: bool, fields: dict[str, Any] | None = None
    ) -> None:
        self.path = metrics_path(save_dir)
        self.fields = fields or {}  # added to every record (a distributed trainer's rank)
        self.device = device
        self.show_bar = show_bar
        self.last_loss: float | None = None  # of the latest training record
        self.last_val_loss: float | None = None
        self._bar: Any = None
        self._reset_window(time.perf_counter())

    def clear(self) -> None:
        """Forget earlier runs (``tbg train --fresh``)."""
        if os.path.exists(self.path):
            os.remove(self.path)

    def cut_back(self, step: int) -> None:
        """Keep only the records of steps <= ``step`` (the step a run resumes from; 0 for a fresh start):
        the steps after it are trained and logged again.  The file is rewritten by temp + rename, so a crash
        leaves the old or the cut file, and a rerun cuts again.  A line cut short by a crash is dropped too."""
        try:
            with open(self.path, "rb") as fh:
                lines = fh.read().splitlines(keepends=True)
        except FileNotFoundError:
            return
        steps = [_step_of(line) for line in lines]
        kept = [line for line, s in zip(lines, steps, strict=True) if s is not None and s <= step]
        if kept != lines:
            atomic_write_bytes(self.path, b"".join(kept))

    def open_bar(self, total: int, done: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total, initial=min(total, done), unit="step", file=sys.stderr, disable=not self.show_bar,
            dynamic_ncols=True,
        )  # fmt: skip
        self._reset_window(time.perf_counter())

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def step(self, loss: torch.Tensor, edges: int) -> None:
        """One booked step: its summed loss over ``edges`` edges."""
        self._loss += loss.double()
        self._edges += edges
        self._bar.update(1)

    def train(self, step: int, epoch: int, lr: float) -> None:
        """A training record for the steps since the last one."""
        now = time.perf_counter()
        self.last_loss = float(self._loss) / max(1, self._edges)
        rate = self._edges / max(1e-9, now - self._since)
        self.write({"step": step, "epoch": epoch, "loss": self.last_loss, "edges_per_s": rate, "lr": lr})
        self._bar.set_postfix(loss=f"{self.last_loss:.4f}", edges_s=f"{rate:,.0f}", refresh=False)
        self._reset_window(now)

    def validation(self, record: dict[str, Any]) -> None:
        """A validation record (``val_loss`` and any ranking metrics)."""
        self.last_val_loss = record["val_loss"]
        self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json_line({**record, **self.fields, "time": time.time()}) + "\n")

    def _reset_window(self, now: float) -> None:
        self._loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._edges = 0
        self._since = now


def _step_of(line: bytes) -> int | None:
    """The integer step of a complete metrics line, else None."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None

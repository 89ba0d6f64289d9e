"""What a run reports as it goes: save_dir/metrics.jsonl (one JSON record per log or validation step) and the
tqdm bar on stderr.

Training records carry the mean loss per edge and the edges/s since the previous training record; the
per-step loss is summed on the device and read back only when a record is written (no sync per step).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch

METRICS = "metrics.jsonl"


class MetricsLog:
    def __init__(self, save_dir: str, device: torch.device, show_bar: bool) -> None:
        self.path = os.path.join(save_dir, METRICS)
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
            fh.write(json.dumps({**record, "time": time.time()}) + "\n")

    def _reset_window(self, now: float) -> None:
        self._loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._edges = 0
        self._since = now

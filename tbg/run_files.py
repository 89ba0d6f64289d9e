"""The files a run leaves in save_dir beside its checkpoints: their names and the metrics line format.

``metrics.jsonl`` is written by the trainer (train/metrics_log.py) and read by ``tbg report`` (run_report.py);
``eval_<split>.json`` is written by ``tbg eval`` and read by ``tbg report``.  torch-free, so the readers stay light.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

METRICS = "metrics.jsonl"  # one strict-JSON record per training or validation log step


def metrics_path(save_dir: str) -> str:
    return os.path.join(save_dir, METRICS)


def eval_result_path(save_dir: str, split: str) -> str:
    """Where ``tbg eval`` writes the ranking of ``split`` by default."""
    return os.path.join(save_dir, f"eval_{split}.json")


def json_line(record: dict[str, Any]) -> str:
    """``record`` as strict JSON: non-finite floats become null, their keys listed under ``nonfinite``."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        record = {**{k: (None if k in bad else v) for k, v in record.items()}, "nonfinite": bad}
    return json.dumps(record, allow_nan=False)

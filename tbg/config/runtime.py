"""The `runtime` section: device, threads, seed, precision."""

from __future__ import annotations

from typing import Any

import attrs

from tbg.config.fields import FieldProblem, finite, positive, setting


def _size(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None:
        from tbg.memory import parse_size

        try:
            parse_size(value)
        except ValueError as exc:
            raise FieldProblem(attr.name, str(exc)) from None


@attrs.define(kw_only=True)
class WandbConfig:
    """Accepted for TwHIN compatibility (TwHIN does not use it either); tbg logs to metrics.jsonl instead."""

    host: str | None = setting("accepted, unused", default=None)
    key_path: str = setting("accepted, unused")
    name: str | None = setting("accepted, unused", default=None)
    entity: str | None = setting("accepted, unused", default=None)
    project: str | None = setting("accepted, unused", default=None)
    notes: str | None = setting("accepted, unused", default=None)
    tags: list[str] = setting("accepted, unused", factory=list)
    metadata: dict[str, Any] | None = setting("accepted, unused", default=None)


@attrs.define(kw_only=True)
class DistributedConfig:
    """Trainers launched by torchrun (docs/distributed.md): how long a trainer waits for a lost one."""

    timeout_s: float = setting(
        "a trainer whose heartbeat has not moved for this long is lost (the others stop with one line naming"
        " it); also bounds reaching the store, forming the process group and every wait for rank 0",
        default=300.0,
        validator=[finite, positive],
        ext=True,
    )
    heartbeat_s: float = setting(
        "interval of each trainer's heartbeat in the launcher's store",
        default=2.0,
        validator=[finite, positive],
        ext=True,
    )


@attrs.define(kw_only=True)
class RuntimeConfig:
    """Where and how the process runs."""

    wandb: WandbConfig | None = setting(
        "accepted for compatibility; tbg logs to `metrics.jsonl`", twhin="not used", default=None
    )
    enable_tensorfloat32: bool = setting("allow TF32 matmuls on GPU", twhin="ignored", default=False)
    enable_amp: bool = setting("bf16/fp16 autocast on GPU", twhin="ignored", default=False)
    device: str = setting("`auto` (CUDA if present) | `cpu` | `cuda` | `cuda:N`", default="auto", ext=True)
    num_threads: int | None = setting(
        "CPU threads, shared out among the Hogwild workers",
        default=None,
        validator=positive,
        ext=True,
        default_doc="none: the CPUs of the process's affinity mask",
    )
    hogwild_workers: int | None = setting(
        "CPU training threads that each run whole steps against the shared tables without locks, with"
        " `num_threads // hogwild_workers` intra-op threads each (docs/training.md); 1: one worker using every"
        " thread, bit-reproducible runs",
        default=None,
        validator=positive,
        ext=True,
        default_doc="none (auto): `min(num_threads, 4)` on CPU, 1 on CUDA and for batches above 10,000 edges per"
        " update (lock-free steps that touch most rows at once collapse training)",
    )
    seed: int = setting("seed of initialisation, shuffling and negatives", default=0, ext=True)
    memory_budget: str | None = setting(
        "bound on what `tbg train` holds: resident partitions + optimizer state + partitions read ahead and being"
        " written back + edge chunks (e.g. `768MiB`, `8GiB`); `num_partitions: auto` picks P from it, a budget"
        " that cannot hold a bucket's partitions is refused; the process adds a fixed overhead of at most"
        " 600 MiB (docs/memory.md)",
        default=None,
        validator=_size,
        ext=True,
        default_doc="none: unbounded (every read ahead is taken, edge chunks of `max_edges_per_chunk`)",
    )
    cpu_bf16: str = setting(
        "bf16 score matrix products on CPU during training; `auto` = only where the CPU has"
        " native bf16 that beats fp32 there: AMX, or AVX512-BF16 on AMD (emulation is slow, and an Intel CPU with"
        " AVX512-BF16 but no AMX ran torch's bf16 products slower than fp32). Evaluation always runs in fp32",
        default="auto",
        choices=("auto", "on", "off"),
        ext=True,
    )
    distributed: DistributedConfig = setting(
        "torchrun trainers: heartbeats and timeouts", factory=DistributedConfig, ext=True
    )

    def __attrs_post_init__(self) -> None:
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise FieldProblem("device", f"must be auto, cpu, cuda or cuda:N, got {dev!r}")

"""The config schema: TwHIN's keys, types and defaults plus tbg's extensions, as attrs classes.

TwHIN's ``projects/twhin/config/local.yaml`` loads unchanged.  Field validators raise :class:`_FieldProblem` so that
the loader can name the dotted path of the offending key, e.g. ``model.relations[1].lhs: unknown table 'usr'``.

Deliberate relaxations of TwHIN's rules (documented in docs/config.md):
- tables may differ in ``embedding_dim``/``data_type``; only the two tables of one relation must share a dim;
- ``num_embeddings`` may be omitted in ``names`` id mode (the importer counts the entities);
- ``offset: 0`` is allowed, ``global_negatives``/``in_batch_negatives`` default to 0 (TwHIN requires them);
- ``in_batch_negatives: 0`` is valid (TwHIN divides by zero).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import typing
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath
from typing import Any

import attrs

from tbg.errors import ConfigError as ConfigError  # re-exported: loading and __init__ import it from here


class _FieldProblem(ValueError):
    """Raised by field validators so the error path can name the field itself."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


# ----------------------------------------------------------------------------- validators


def _positive(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None and not value > 0:
        raise _FieldProblem(attr.name, f"must be > 0, got {value!r}")


def _non_negative(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise _FieldProblem(attr.name, f"must be >= 0, got {value!r}")


_positive.bound = "> 0"  # type: ignore[attr-defined]
_non_negative.bound = "≥ 0"  # type: ignore[attr-defined]


def _finite(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None and not math.isfinite(value):
        raise _FieldProblem(attr.name, f"must be a finite number, got {value!r}")


def _non_empty(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None and len(value) == 0:
        raise _FieldProblem(attr.name, "must not be empty")


def _registered(kind: str) -> Any:
    """Validator: the value names a registered ``kind`` (operator, comparator, loss; plugins included)."""

    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        registry = _registries()[kind]
        if value not in registry:
            raise _FieldProblem(attr.name, f"must be one of {', '.join(registry.names())}, got {value!r}")

    return check


def _registries() -> dict[str, Any]:
    # imported on first use: torch-free declaration modules, found after any plugin has registered
    from tbg.model.comparators import COMPARATORS
    from tbg.model.losses import LOSSES
    from tbg.model.operators import OPERATORS

    return {"operator": OPERATORS, "comparator": COMPARATORS, "loss": LOSSES}


def _names(kind: str) -> Callable[[], Iterable[str]]:
    """The registered names of ``kind``, looked up when the docs are rendered (plugins included)."""
    return lambda: _registries()[kind].names()


def _exactly_one(instance: Any, group: tuple[str, ...], what: str) -> None:
    chosen = [name for name in group if getattr(instance, name) is not None]
    if len(chosen) != 1:
        raise _FieldProblem("", f"exactly one of {'/'.join(group)} must be set for {what}, got {chosen or 'none'}")


def setting(
    help: str,
    *,
    twhin: str | None = None,
    ext: bool = False,
    default_doc: str | None = None,
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None,
    validator: Any = None,
    **kwargs: Any,
) -> Any:
    """An ``attrs.field`` that carries its documentation in ``metadata`` (docs/config.md is generated from it).

    ``help`` is what tbg does with the key, ``twhin`` what TwHIN's release does with it (when that differs or
    matters), ``ext`` marks a tbg extension, ``default_doc`` explains a default that its value alone does not,
    ``choices`` lists the accepted strings of a string field (or returns them, e.g. from a registry, when the
    docs are rendered).  Validators with a ``bound`` attribute ("> 0") add it to the documented type.
    """
    validators = list(validator) if isinstance(validator, (list, tuple)) else [validator] if validator else []
    bounds = [v.bound for v in validators if hasattr(v, "bound")]
    metadata = {
        "help": help,
        "twhin": twhin,
        "ext": ext,
        "default_doc": default_doc,
        "bound": " ".join(bounds),
        "choices": choices,
    }
    return attrs.field(validator=validators or None, metadata=metadata, **kwargs)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of each field of the attrs class ``cls`` (this module postpones annotations)."""
    return typing.get_type_hints(cls)


# ----------------------------------------------------------------------------- enums


class _StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class DataType(_StrEnum):
    fp32 = "fp32"
    fp16 = "fp16"


class InBatchScope(_StrEnum):
    """Where in-batch negatives come from (``train_data.in_batch_scope``; ``auto``: see
    :meth:`DataConfig.negative_scheme`)."""

    auto = "auto"
    relation = "relation"
    batch = "batch"
    chunk = "chunk"


class GlobalNegativesScope(_StrEnum):
    """Who shares one draw of the uniform negatives (``train_data.global_negatives_scope``)."""

    batch = "batch"
    chunk = "chunk"


class RelationSides(_StrEnum):
    both = "both"
    rhs = "rhs"


class BucketOrder(_StrEnum):
    inside_out = "inside_out"
    affinity = "affinity"
    random = "random"


class IdMode(_StrEnum):
    indices = "indices"
    names = "names"


class SourceFormat(_StrEnum):
    parquet = "parquet"
    tsv = "tsv"
    csv = "csv"


class Candidates(_StrEnum):
    all = "all"
    seen = "seen"
    sampled = "sampled"


# ----------------------------------------------------------------------------- optimizers


@attrs.define(kw_only=True)
class SgdConfig:
    """Plain SGD (TwHIN's only embedding optimizer, fused into torchrec's tables)."""

    lr: float = setting(
        "learning rate (overridden by `learning_rate` when that is set)", validator=[_finite, _positive]
    )
    momentum: float = setting(
        "momentum (on tables: lazy, only the touched rows' buffers move)",
        default=0.0,
        validator=[_finite, _non_negative],
    )


@attrs.define(kw_only=True)
class AdamConfig:
    """Adam; on embedding tables lazy Adam (`torch.optim.SparseAdam`): only the batch's rows move."""

    lr: float = setting(
        "learning rate (overridden by `learning_rate` when that is set)", validator=[_finite, _positive]
    )
    betas: tuple[float, float] = setting("Adam's two moment decay rates", default=(0.9, 0.999))
    eps: float = setting(
        "added to the denominator for stability (TwHIN's default)", default=1e-7, validator=[_finite, _non_negative]
    )


@attrs.define(kw_only=True)
class AdagradConfig:
    """Adagrad: one accumulator per parameter (for a table, D per row)."""

    lr: float = setting(
        "learning rate (overridden by `learning_rate` when that is set)", validator=[_finite, _positive]
    )
    eps: float = setting(
        "added to the denominator for stability (torch's default)", default=0.0, validator=[_finite, _non_negative]
    )


@attrs.define(kw_only=True)
class RowAdagradConfig:
    """tbg extension: one accumulator per row (PBG's memory-light default), 1/D of Adagrad's state."""

    lr: float = setting(
        "learning rate (overridden by `learning_rate` when that is set)", validator=[_finite, _positive]
    )
    eps: float = setting(
        "added to the denominator for stability (PBG's value)", default=1e-10, validator=[_finite, _non_negative]
    )


@attrs.define(kw_only=True)
class LinearRampToConstant:
    """lr at step s = `learning_rate * min(1, s / num_ramp_steps)`."""

    learning_rate: float = setting("the constant reached at the end of the ramp", validator=[_finite, _non_negative])
    num_ramp_steps: int = setting("steps of the linear ramp from 0", validator=_positive)


@attrs.define(kw_only=True)
class LinearRampToCosine:
    """A linear ramp from 0 to `learning_rate`, then a cosine decay to `final_learning_rate`, then constant."""

    learning_rate: float = setting("peak learning rate, reached after the ramp", validator=[_finite, _non_negative])
    final_learning_rate: float = setting(
        "learning rate at `final_num_steps` and after", validator=[_finite, _non_negative]
    )
    num_ramp_steps: int = setting("steps of the linear ramp from 0", validator=_positive)
    final_num_steps: int = setting("step at which the cosine decay ends", validator=_positive)


@attrs.define(kw_only=True)
class PiecewiseConstant:
    """lr at step s = `learning_rate_values[number of boundaries <= s]`."""

    learning_rate_boundaries: list[int] = setting(
        "steps where the next value starts, strictly increasing", factory=list
    )
    learning_rate_values: list[float] = setting("one more value than boundaries", factory=list)

    def __attrs_post_init__(self) -> None:
        if len(self.learning_rate_values) != len(self.learning_rate_boundaries) + 1:
            raise _FieldProblem(
                "learning_rate_values",
                "must have exactly one more entry than learning_rate_boundaries",
            )
        if any(b2 <= b1 for b1, b2 in zip(self.learning_rate_boundaries, self.learning_rate_boundaries[1:])):
            raise _FieldProblem("learning_rate_boundaries", "must be strictly increasing")


@attrs.define(kw_only=True)
class LearningRate:
    """TwHIN's schedules (exactly one), with TwHIN's `compute_lr` formulas, step counted from 0.

    TwHIN ignores them (its scheduler is disabled); tbg applies them per step and they override the optimizer's
    `lr`.
    """

    constant: float | None = setting(
        "this learning rate at every step", default=None, validator=[_finite, _non_negative]
    )
    linear_ramp_to_constant: LinearRampToConstant | None = setting("linear warm-up to a constant", default=None)
    linear_ramp_to_cosine: LinearRampToCosine | None = setting("linear warm-up, then cosine decay", default=None)
    piecewise_constant: PiecewiseConstant | None = setting("a step function", default=None)

    def __attrs_post_init__(self) -> None:
        _exactly_one(self, _LR_GROUP, "learning_rate")

    def at(self, step: int) -> float:
        """Learning rate for ``step`` (0-based), with TwHIN's ``compute_lr`` formulas."""
        if self.constant is not None:
            return self.constant
        if (ramp := self.linear_ramp_to_constant) is not None:
            return ramp.learning_rate * min(1.0, step / ramp.num_ramp_steps)
        if (cos := self.linear_ramp_to_cosine) is not None:
            if step < cos.num_ramp_steps:
                return cos.learning_rate * step / cos.num_ramp_steps
            span = max(1, cos.final_num_steps - cos.num_ramp_steps)
            progress = min(1.0, (step - cos.num_ramp_steps) / span)
            return cos.final_learning_rate + 0.5 * (cos.learning_rate - cos.final_learning_rate) * (
                1 + math.cos(math.pi * progress)
            )
        pw = self.piecewise_constant
        assert pw is not None
        index = sum(1 for boundary in pw.learning_rate_boundaries if step >= boundary)
        return pw.learning_rate_values[index]


_LR_GROUP = ("constant", "linear_ramp_to_constant", "linear_ramp_to_cosine", "piecewise_constant")
_OPT_GROUP = ("sgd", "adam", "adagrad", "row_adagrad")


@attrs.define(kw_only=True)
class OptimizerConfig:
    """Exactly one of `sgd` / `adam` / `adagrad` (TwHIN) or `row_adagrad` (tbg), plus an optional schedule."""

    learning_rate: LearningRate | None = setting(
        "a schedule that overrides the optimizer's `lr`",
        twhin="ignored (scheduler disabled)",
        default=None,
        default_doc="none: the optimizer's own constant `lr`",
    )
    sgd: SgdConfig | None = setting("plain SGD", default=None)
    adam: AdamConfig | None = setting("Adam (sparse rows on tables)", default=None)
    adagrad: AdagradConfig | None = setting("Adagrad, D accumulators per row", default=None)
    row_adagrad: RowAdagradConfig | None = setting(
        "Adagrad with one accumulator per row (PBG's default), 1/D of Adagrad's state", default=None, ext=True
    )

    def __attrs_post_init__(self) -> None:
        _exactly_one(self, _OPT_GROUP, "optimizer")

    @property
    def kind(self) -> str:
        return next(name for name in _OPT_GROUP if getattr(self, name) is not None)

    @property
    def params(self) -> SgdConfig | AdamConfig | AdagradConfig | RowAdagradConfig:
        return getattr(self, self.kind)

    def lr_at(self, step: int) -> float:
        """The schedule when one is given, else the optimizer's own constant ``lr``."""
        return self.learning_rate.at(step) if self.learning_rate is not None else self.params.lr


# ----------------------------------------------------------------------------- runtime / training


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
        validator=[_finite, _positive],
        ext=True,
    )
    heartbeat_s: float = setting(
        "interval of each trainer's heartbeat in the launcher's store",
        default=2.0,
        validator=[_finite, _positive],
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
        validator=_positive,
        ext=True,
        default_doc="none: the CPUs of the process's affinity mask",
    )
    hogwild_workers: int | None = setting(
        "CPU training threads that each run whole steps against the shared tables without locks, with"
        " `num_threads // hogwild_workers` intra-op threads each (docs/training.md); 1: one worker using every"
        " thread, bit-reproducible runs",
        default=None,
        validator=_positive,
        ext=True,
        default_doc="none (auto): `min(num_threads, 4)` on CPU, 1 on CUDA",
    )
    seed: int = setting("seed of initialisation, shuffling and negatives", default=0, ext=True)
    cpu_bf16: str = setting(
        "bf16 score matrix products on CPU during training; `auto` = only where the CPU has"
        " native bf16 (AVX512-BF16/AMX), since emulation is slow. Evaluation always runs in fp32",
        default="auto",
        choices=("auto", "on", "off"),
        ext=True,
    )
    distributed: DistributedConfig = setting(
        "torchrun trainers: heartbeats and timeouts", factory=DistributedConfig, ext=True
    )

    def __attrs_post_init__(self) -> None:
        if self.cpu_bf16 not in ("auto", "on", "off"):
            raise _FieldProblem("cpu_bf16", f"must be auto, on or off, got {self.cpu_bf16!r}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise _FieldProblem("device", f"must be auto, cpu, cuda or cuda:N, got {dev!r}")


@attrs.define(kw_only=True)
class TrainingConfig:
    """The training run: where it is saved, how long it runs, how often it logs, validates and checkpoints."""

    save_dir: str = setting(
        "checkpoints and `metrics.jsonl`; the graph dir defaults to `<save_dir>/graph`",
        twhin="ignored (its `--save_dir` flag is used)",
        default="/tmp/model",
    )
    num_train_steps: int = setting(
        "stop after N steps or `num_epochs`, whichever comes first",
        twhin="steps 0..N inclusive",
        default=10000,
        validator=_positive,
    )
    initial_checkpoint_dir: str | None = setting(
        "warm start from this tbg checkpoint", twhin="warm start", default=None
    )
    checkpoint_every_n: int = setting(
        "checkpoint every N steps and at the end",
        twhin="only on steps that are also log steps",
        default=1000,
        validator=_positive,
    )
    checkpoint_max_to_keep: int | None = setting(
        "prune older checkpoint versions beyond this many",
        twhin="ignored",
        default=None,
        validator=_positive,
        default_doc="none: keep all",
    )
    train_log_every_n: int = setting(
        "log loss and edges/s to the progress bar and `metrics.jsonl` every N steps",
        twhin="log interval",
        default=1000,
        validator=_positive,
    )
    num_eval_steps: int = setting(
        "validation batches per validation pass; < 0: the whole validation split", twhin="ignored", default=16384
    )
    eval_log_every_n: int = setting("run validation every N steps", twhin="ignored", default=5000, validator=_positive)
    eval_timeout_in_s: float = setting(
        "time limit of one validation pass (the loss of the batches scored by then is logged)",
        twhin="ignored",
        default=3600.0,
        validator=[_finite, _positive],
    )
    gradient_accumulation: int | None = setting(
        "parameters move every N batches with the summed gradients of all N (also at bucket ends and"
        " checkpoints); steps and schedules count batches",
        twhin="passed to the pipeline (its fused embedding SGD ignores it)",
        default=None,
        validator=_positive,
        default_doc="none: every batch",
    )
    num_epochs: int = setting(
        "passes over all buckets", twhin="ignored (infinite stream)", default=1, validator=_positive
    )
    bucket_order: BucketOrder = setting("the order buckets are visited in", default=BucketOrder.inside_out, ext=True)
    validation_mrr: bool = setting(
        "also log a sampled validation MRR at each validation pass (opt-in: it costs time)", default=False, ext=True
    )
    report: bool = setting(
        "write `save_dir/report/` (`tbg report`: PNG pictures + index.md, docs/report.md) when `tbg train` ends",
        default=False,
        ext=True,
    )
    max_edges_per_chunk: int = setting(
        "a bucket larger than this is read and trained in chunks of this many edges (bounds memory)",
        default=10_000_000,
        validator=_positive,
        ext=True,
    )


# ----------------------------------------------------------------------------- model


@attrs.define(kw_only=True)
class EmbeddingSnapshot:
    """A pretrained snapshot (accepted for TwHIN compatibility, unused by both)."""

    emb_name: str = setting("accepted, unused")
    embedding_snapshot_uri: str = setting("accepted, unused")


@attrs.define(kw_only=True)
class EmbeddingTableConfig:
    """One entity type (TwHIN: one torchrec table)."""

    name: str = setting(
        "entity type; relations refer to it by this name", twhin="table = feature name", validator=_non_empty
    )
    num_embeddings: int | None = setting(
        "entity count: ids must be < num_embeddings; optional in `graph.id_mode: names` (the importer counts)",
        twhin="table rows (required)",
        default=None,
        validator=_positive,
        default_doc="required in indices id mode",
    )
    embedding_dim: int = setting(
        "vector size; the two tables of one relation must share it", twhin="must equal table 0's", validator=_positive
    )
    optimizer: OptimizerConfig = setting("per-table optimizer with sparse row updates", twhin="fused SGD, lr only")
    data_type: DataType = setting(
        "storage dtype of the vectors", twhin="storage dtype (required)", default=DataType.fp32
    )
    pretrained: EmbeddingSnapshot | None = setting("accepted, unused", twhin="unused", default=None)
    vocab: str | None = setting("accepted, unused", twhin="unused", default=None)
    num_partitions: int = setting(
        "PBG partitions of this type; all partitioned tables share one P", default=1, validator=_positive, ext=True
    )
    init_scale: float | None = setting(
        "N(0, init_scale) initialisation, as in PBG",
        default=None,
        validator=[_finite, _positive],
        ext=True,
        default_doc="none: U(±sqrt(1/num_embeddings)), torchrec's default",
    )


@attrs.define(kw_only=True)
class EmbeddingsConfig:
    """The entity types."""

    tables: list[EmbeddingTableConfig] = setting(
        "one entity type each", twhin="one torchrec table each", validator=_non_empty
    )
    tables_to_log: list[str] | None = setting("accepted; the names must be tables", twhin="not passed on", default=None)


@attrs.define(kw_only=True)
class RelationConfig:
    """One edge type; its position in `model.relations` is its relation id."""

    name: str = setting("unique; names-mode sources may give relations by name", validator=_non_empty)
    lhs: str = setting("table of the source entities (must exist)", twhin="table name")
    rhs: str = setting("table of the destination entities (must exist)", twhin="table name")
    operator: str = setting(
        "transform applied to the embeddings before comparing (`complex_diagonal` needs an even dim; plugins:"
        " docs/extending.md)",
        twhin="only `translation`, applied to rhs",
        default="translation",
        validator=_registered("operator"),
        choices=_names("operator"),
    )
    weight: float = setting(
        "loss weight of the relation's edges", default=1.0, validator=[_finite, _positive], ext=True
    )


@attrs.define(kw_only=True)
class ModelConfig:
    """Entity tables, relations and how edges are scored."""

    embeddings: EmbeddingsConfig = setting("the entity tables")
    relations: list[RelationConfig] = setting(
        "the edge types; position = relation id", twhin="position = `rel` id", validator=_non_empty
    )
    translation_optimizer: OptimizerConfig = setting(
        "trains the relation (operator) parameters", twhin="its only parameter never gets a gradient"
    )
    comparator: str = setting(
        "how an operator-transformed embedding is compared with a candidate",
        twhin="(dot)",
        default="dot",
        validator=_registered("comparator"),
        choices=_names("comparator"),
        ext=True,
    )
    loss: str = setting(
        "`logistic` (negatives labelled 0, weighted to the positives' total), `ranking` (margin), `softmax`",
        twhin="(BCE, negatives wrongly labelled 1)",
        default="logistic",
        validator=_registered("loss"),
        choices=_names("loss"),
        ext=True,
    )
    margin: float = setting("margin of the `ranking` loss", default=0.1, validator=_finite, ext=True)
    relation_sides: RelationSides = setting(
        "`both`: an operator per side, rhs candidates scored by cmp(g_r(lhs), rhs) and lhs candidates by the"
        " reciprocal operator; `rhs`: one operator on the rhs side (PBG standard, TwHIN literal)",
        twhin="(`rhs`)",
        default=RelationSides.both,
        ext=True,
    )

    def table(self, name: str) -> EmbeddingTableConfig:
        return next(t for t in self.embeddings.tables if t.name == name)


# ----------------------------------------------------------------------------- data


@attrs.define(kw_only=True)
class DataConfig:
    """One split of source edges and how its batches and negatives are drawn.

    `validation_data` is required (as in TwHIN, which never reads it); tbg imports it as the `valid` split and
    reports validation loss on it. `test_data` is optional; `tbg eval` ranks it by default (`eval.split`).
    """

    data_root: str = setting(
        "any fsspec URL or glob; Parquet, TSV or CSV (see `graph`)",
        twhin="Parquet glob (local or `gs://`)",
        validator=_non_empty,
    )
    per_replica_batch_size: int = setting(
        "positives per step (per trainer)",
        twhin="positives per rank per step (required)",
        default=1000,
        validator=_positive,
    )
    global_negatives: int = setting(
        "G uniform entities of the partition, shared by the batch (or per chunk, see `global_negatives_scope`)",
        twhin="ignored (required)",
        default=0,
        validator=_non_negative,
    )
    in_batch_negatives: int = setting(
        "S entities sampled from the batch's edges (see `in_batch_scope`; with `auto` and uniform negatives, any"
        " S > 0 means the whole batch)",
        twhin="S per relation per side (required; 0 crashes)",
        default=0,
        validator=_non_negative,
    )
    limit: int | None = setting(
        "read at most this many rows of the source (files in sorted order)",
        twhin="ignored",
        default=None,
        validator=_positive,
        default_doc="none: all rows",
    )
    offset: int | None = setting(
        "skip this many rows first",
        twhin="ignored (must be > 0)",
        default=None,
        validator=_non_negative,
        default_doc="none: row 0",
    )
    in_batch_scope: InBatchScope = setting(
        "where in-batch negatives come from: `relation`: S edges of each relation in the batch, shared by its"
        " edges (TwHIN); `batch`: S edges of the whole batch, shared by all; `chunk`: PBG's chunks of S edges"
        " whose positives are negatives for one another; `auto`: tbg's best measured scheme, `batch` with every"
        " other positive of the batch (S is raised to the batch size) when the section also draws uniform"
        " negatives, `relation` (TwHIN's meaning) when it has in-batch negatives only (docs/training.md)",
        default=InBatchScope.auto,
        default_doc="`auto`: the whole batch as in-batch negatives gave the best filtered MRR of the defaults"
        " study at P=1 and P=4 (docs/benchmarks.md), well above S per relation or PBG's chunks of S, at about"
        " half their edges/s; a config without uniform negatives is TwHIN's scheme, so it keeps TwHIN's"
        " per-relation S",
        ext=True,
    )
    global_negatives_scope: GlobalNegativesScope = setting(
        "who shares one draw of the G uniform samples: the whole batch (TwHIN), or chunks"
        " (needs `in_batch_scope: chunk`)",
        default=GlobalNegativesScope.batch,
        default_doc="`batch`: the scheme `in_batch_scope: auto` picks was measured with one draw per batch (G"
        " sampled rows a step; a draw per chunk costs C·G)",
        ext=True,
    )
    global_negatives_chunks_per_draw: int = setting(
        "with `global_negatives_scope: chunk`, consecutive chunks sharing one draw; 1 = each chunk its own (PBG"
        " exactly, C·G sampled rows a step), k = ⌈C/k⌉ draws a step",
        default=1,
        validator=_positive,
        ext=True,
    )

    def negative_scheme(self) -> tuple[InBatchScope, int]:
        """The in-batch scope and S this section trains with, ``auto`` resolved.

        ``auto``: with uniform negatives (``global_negatives > 0``, which TwHIN's release never draws, so the
        config is not written in TwHIN's scheme) every edge meets every other positive of its batch (``batch``
        scope, S = the batch size), the best scheme measured; with in-batch negatives only it is TwHIN's scheme,
        S per relation.  ``in_batch_negatives: 0`` keeps in-batch negatives off either way.
        """
        if self.in_batch_scope != InBatchScope.auto:
            return self.in_batch_scope, self.in_batch_negatives
        if self.global_negatives == 0:
            return InBatchScope.relation, self.in_batch_negatives
        if self.in_batch_negatives == 0:
            return InBatchScope.batch, 0
        return InBatchScope.batch, max(self.in_batch_negatives, self.per_replica_batch_size)

    def __attrs_post_init__(self) -> None:
        if self.global_negatives_chunks_per_draw > 1 and self.global_negatives_scope != GlobalNegativesScope.chunk:
            raise _FieldProblem(
                "global_negatives_chunks_per_draw", "needs global_negatives_scope chunk (batch: one draw for all)"
            )
        if self.global_negatives_scope == GlobalNegativesScope.chunk and self.in_batch_scope != InBatchScope.chunk:
            raise _FieldProblem(
                "global_negatives_scope", f"chunk needs in_batch_scope chunk, got {self.in_batch_scope!r}"
            )


@attrs.define(kw_only=True)
class ColumnsConfig:
    """Column names, or 0-based positions, of the source edge files."""

    lhs: str | int = setting("source entity column", default="lhs")
    rel: str | int | None = setting(
        "relation column; with exactly one relation it is optional: omitted, null, or a name the file lacks means"
        " every edge is that relation (a file that has the column is still checked)",
        default="rel",
    )
    rhs: str | int = setting("destination entity column", default="rhs")
    weight: str | int | None = setting(
        "optional float column, >= 0: multiplies the edge's loss (docs/training.md)", default=None
    )


@attrs.define(kw_only=True)
class GraphConfig:
    """tbg extension: where the imported graph lives and how the sources are read.

    Without a `graph` section (plain TwHIN configs) tbg reads `data_root` as Parquet with integer `lhs`/`rel`/`rhs`
    columns in `indices` mode and keeps the graph under `save_dir/graph`.
    """

    dir: str | None = setting(
        "graph dir written by `tbg import`, read by train/eval/export",
        default=None,
        default_doc="`<training.save_dir>/graph`",
    )
    id_mode: IdMode = setting(
        "`indices`: integer row ids per table (TwHIN); `names`: strings mapped to ids by per-type dictionaries",
        default=IdMode.indices,
    )
    format: SourceFormat | None = setting("source format", default=None, default_doc="from the file extension")
    delimiter: str | None = setting(
        "field separator of TSV/CSV (one character)", default=None, default_doc="tab (tsv), comma (csv)"
    )
    header: bool = setting("the first row of TSV/CSV is a header", default=False)
    columns: ColumnsConfig | None = setting(
        "column names or 0-based positions",
        default=None,
        default_doc="names `lhs`/`rel`/`rhs` (Parquet, header) or positions 0/1/2",
    )
    relation_by: str = setting(
        "whether the `rel` column holds relation names or indices", default="auto", choices=("auto", "name", "index")
    )
    chunk_rows: int = setting(
        "rows per streamed record batch (bounds import memory)", default=1 << 20, validator=_positive
    )
    seed: int = setting("seed of the entity shuffle that assigns partitions", default=0)

    def __attrs_post_init__(self) -> None:
        if self.relation_by not in ("auto", "name", "index"):
            raise _FieldProblem("relation_by", f"must be auto, name or index, got {self.relation_by!r}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise _FieldProblem("delimiter", f"must be a single character, got {self.delimiter!r}")


@attrs.define(kw_only=True)
class EvalConfig:
    """tbg extension: how `tbg eval` ranks."""

    candidates: Candidates = setting(
        "`all`: every declared entity of the right type (indices mode: ids no edge mentions too); `seen`: only"
        " entities in an edge of any imported split (PBG's, PyKEEN's and OGB's set); `sampled`: PBG-style sampled"
        " negatives, never comparable with the other two (docs/evaluation.md says when each is right)",
        default=Candidates.all,
    )
    filtered: bool = setting("remove other known true edges (train+valid+test) from the candidates", default=True)
    hits_at: list[int] = setting("the k of the reported Hits@k", factory=lambda: [1, 3, 10])
    batch_size: int = setting("test edges ranked per batch", default=1000, validator=_positive)
    num_uniform_negatives: int = setting(
        "uniform candidates per edge with `candidates: sampled`", default=1000, validator=_non_negative
    )
    num_batch_negatives: int = setting(
        "in-batch candidates per edge with `candidates: sampled`", default=50, validator=_non_negative
    )
    split: str = setting("the split to rank", default="test", choices=("test", "valid", "train"))

    def __attrs_post_init__(self) -> None:
        if any(k <= 0 for k in self.hits_at):
            raise _FieldProblem("hits_at", f"every k must be > 0, got {self.hits_at}")
        if self.split not in ("test", "valid", "train"):
            raise _FieldProblem("split", f"must be test, valid or train, got {self.split!r}")


# ----------------------------------------------------------------------------- top level


@attrs.define(kw_only=True)
class Config:
    """A whole run. The top-level keys are exactly TwHIN's, plus tbg's optional `test_data`, `graph` and `eval`."""

    runtime: RuntimeConfig = setting("device, threads, seed", factory=RuntimeConfig)
    training: TrainingConfig = setting("save dir, run length, logging, checkpoints", factory=TrainingConfig)
    model: ModelConfig = setting("entity tables, relations, scoring")
    train_data: DataConfig = setting("the training split")
    validation_data: DataConfig = setting(
        "the validation split: tbg imports it as `valid` and logs validation loss on it", twhin="never read"
    )
    test_data: DataConfig | None = setting("an optional third split, the one `tbg eval` ranks", default=None, ext=True)
    graph: GraphConfig = setting("where the imported graph lives, how sources are read", factory=GraphConfig, ext=True)
    eval: EvalConfig = setting("how `tbg eval` ranks", factory=EvalConfig, ext=True)

    @property
    def graph_dir(self) -> str:
        if self.graph.dir is not None:
            return self.graph.dir
        return (
            str(PurePosixPath(self.training.save_dir) / "graph")
            if "://" not in self.training.save_dir
            else (self.training.save_dir.rstrip("/") + "/graph")
        )

    def splits(self) -> dict[str, DataConfig]:
        """The data splits the config names, in import order."""
        out = {"train": self.train_data, "valid": self.validation_data}
        if self.test_data is not None:
            out["test"] = self.test_data
        return out

    def to_dict(self) -> dict[str, Any]:
        from tbg.config.loading import converter

        return converter.unstructure(self, Config)

    def fingerprint(self, *sections: str) -> str:
        """A stable hash of the named top-level sections (what an import or checkpoint depends on)."""
        data = self.to_dict()
        chosen = {k: data[k] for k in sections} if sections else data
        return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- cross-field rules


def check_references(cfg: Config) -> list[str]:
    """Cross-field rules: table/relation names, dims, id modes."""
    operators = _registries()["operator"]
    problems: list[str] = []
    tables = cfg.model.embeddings.tables
    names = [t.name for t in tables]
    for i, name in enumerate(names):
        if names.index(name) != i:
            problems.append(f"model.embeddings.tables[{i}].name: duplicate table name {name!r}")
        if cfg.graph.id_mode == IdMode.indices and tables[i].num_embeddings is None:
            problems.append(f"model.embeddings.tables[{i}].num_embeddings: required in indices id mode")
    rel_names = [r.name for r in cfg.model.relations]
    by_name = {t.name: t for t in tables}
    for i, rel in enumerate(cfg.model.relations):
        if rel_names.index(rel.name) != i:
            problems.append(f"model.relations[{i}].name: duplicate relation name {rel.name!r}")
        for side in ("lhs", "rhs"):
            table = getattr(rel, side)
            if table not in by_name:
                problems.append(f"model.relations[{i}].{side}: unknown table {table!r} (tables: {', '.join(names)})")
        if rel.lhs in by_name and rel.rhs in by_name:
            dl, dr = by_name[rel.lhs].embedding_dim, by_name[rel.rhs].embedding_dim
            if dl != dr:
                problems.append(
                    f"model.relations[{i}]: tables {rel.lhs!r} (dim {dl}) and {rel.rhs!r} (dim {dr})"
                    " must share embedding_dim"
                )
            problem = operators.resolve(rel.operator).dim_problem(dl)
            if problem:
                problems.append(f"model.relations[{i}].operator: {rel.operator} {problem}")
    for i, name in enumerate(cfg.model.embeddings.tables_to_log or []):
        if name not in by_name:
            problems.append(f"model.embeddings.tables_to_log[{i}]: unknown table {name!r}")
    relation_aware = any(not operators.resolve(r.operator).is_identity for r in cfg.model.relations)
    if cfg.model.relation_sides == RelationSides.rhs and relation_aware:
        for section, data in (("train_data", cfg.train_data), ("validation_data", cfg.validation_data)):
            if data.in_batch_scope == InBatchScope.chunk:
                problems.append(
                    f"{section}.in_batch_scope: chunk scores mixed relations in one product, which needs"
                    " relation-free candidates: use model.relation_sides both, or in_batch_scope relation/batch"
                )
    partitioned = sorted({t.num_partitions for t in tables if t.num_partitions > 1})
    if len(partitioned) > 1:
        problems.append(f"model.embeddings.tables: partitioned tables must share one num_partitions, got {partitioned}")
    cols = cfg.graph.columns
    if cols is not None and cols.rel is None and len(cfg.model.relations) != 1:
        problems.append("graph.columns.rel: may only be omitted when the model has exactly one relation")
    return problems

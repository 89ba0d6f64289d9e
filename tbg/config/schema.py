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
import hashlib
import json
import math
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


def _exactly_one(instance: Any, group: tuple[str, ...], what: str) -> None:
    chosen = [name for name in group if getattr(instance, name) is not None]
    if len(chosen) != 1:
        raise _FieldProblem("", f"exactly one of {'/'.join(group)} must be set for {what}, got {chosen or 'none'}")


# ----------------------------------------------------------------------------- enums


class _StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class DataType(_StrEnum):
    fp32 = "fp32"
    fp16 = "fp16"


class InBatchScope(_StrEnum):
    """Where in-batch negatives come from (``train_data.in_batch_scope``)."""

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
    sampled = "sampled"


# ----------------------------------------------------------------------------- optimizers


@attrs.define(kw_only=True)
class SgdConfig:
    lr: float = attrs.field(validator=[_finite, _positive])
    momentum: float = attrs.field(default=0.0, validator=[_finite, _non_negative])


@attrs.define(kw_only=True)
class AdamConfig:
    lr: float = attrs.field(validator=[_finite, _positive])
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = attrs.field(default=1e-7, validator=[_finite, _non_negative])


@attrs.define(kw_only=True)
class AdagradConfig:
    lr: float = attrs.field(validator=[_finite, _positive])
    eps: float = attrs.field(default=0.0, validator=[_finite, _non_negative])


@attrs.define(kw_only=True)
class RowAdagradConfig:
    """tbg extension: one accumulator per row (PBG's memory-light default), 1/D of Adagrad's state."""

    lr: float = attrs.field(validator=[_finite, _positive])
    eps: float = attrs.field(default=1e-10, validator=[_finite, _non_negative])


@attrs.define(kw_only=True)
class LinearRampToConstant:
    learning_rate: float = attrs.field(validator=[_finite, _non_negative])
    num_ramp_steps: int = attrs.field(validator=_positive)


@attrs.define(kw_only=True)
class LinearRampToCosine:
    learning_rate: float = attrs.field(validator=[_finite, _non_negative])
    final_learning_rate: float = attrs.field(validator=[_finite, _non_negative])
    num_ramp_steps: int = attrs.field(validator=_positive)
    final_num_steps: int = attrs.field(validator=_positive)


@attrs.define(kw_only=True)
class PiecewiseConstant:
    learning_rate_boundaries: list[int] = attrs.field(factory=list)
    learning_rate_values: list[float] = attrs.field(factory=list)

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
    """TwHIN's schedules (exactly one).  TwHIN ignores them; tbg applies them per step."""

    constant: float | None = attrs.field(default=None, validator=[_finite, _non_negative])
    linear_ramp_to_constant: LinearRampToConstant | None = None
    linear_ramp_to_cosine: LinearRampToCosine | None = None
    piecewise_constant: PiecewiseConstant | None = None

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
    """Exactly one of sgd/adam/adagrad (TwHIN) or row_adagrad (tbg); optional ``learning_rate`` schedule."""

    learning_rate: LearningRate | None = None
    sgd: SgdConfig | None = None
    adam: AdamConfig | None = None
    adagrad: AdagradConfig | None = None
    row_adagrad: RowAdagradConfig | None = None

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
    """Accepted for TwHIN compatibility; tbg logs to metrics.jsonl instead."""

    host: str | None = None
    key_path: str
    name: str | None = None
    entity: str | None = None
    project: str | None = None
    notes: str | None = None
    tags: list[str] = attrs.field(factory=list)
    metadata: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class RuntimeConfig:
    wandb: WandbConfig | None = None
    enable_tensorfloat32: bool = False
    enable_amp: bool = False
    # tbg extensions
    device: str = "auto"
    num_threads: int | None = attrs.field(default=None, validator=_positive)
    # CPU training threads that each run whole steps, lock-free (Hogwild), with num_threads // workers intra-op
    # threads each; None (auto) = min(num_threads, 4) on CPU, 1 on CUDA.  1 = bit-reproducible runs
    hogwild_workers: int | None = attrs.field(default=None, validator=_positive)
    seed: int = 0
    # bf16 score GEMMs on CPU (training only; eval stays fp32): auto = when the CPU has avx512_bf16/amx_bf16
    cpu_bf16: str = "auto"  # auto | on | off

    def __attrs_post_init__(self) -> None:
        if self.cpu_bf16 not in ("auto", "on", "off"):
            raise _FieldProblem("cpu_bf16", f"must be auto, on or off, got {self.cpu_bf16!r}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise _FieldProblem("device", f"must be auto, cpu, cuda or cuda:N, got {dev!r}")


@attrs.define(kw_only=True)
class TrainingConfig:
    save_dir: str = "/tmp/model"
    num_train_steps: int = attrs.field(default=10000, validator=_positive)
    initial_checkpoint_dir: str | None = None
    checkpoint_every_n: int = attrs.field(default=1000, validator=_positive)
    checkpoint_max_to_keep: int | None = attrs.field(default=None, validator=_positive)
    train_log_every_n: int = attrs.field(default=1000, validator=_positive)
    num_eval_steps: int = 16384  # < 0: the whole validation split
    eval_log_every_n: int = attrs.field(default=5000, validator=_positive)
    eval_timeout_in_s: float = attrs.field(default=3600.0, validator=[_finite, _positive])
    gradient_accumulation: int | None = attrs.field(default=None, validator=_positive)
    num_epochs: int = attrs.field(default=1, validator=_positive)
    # tbg extensions
    bucket_order: BucketOrder = BucketOrder.inside_out
    validation_mrr: bool = False  # opt-in: sampled validation MRR into metrics.jsonl at each eval
    report: bool = False  # write save_dir/report/ (`tbg report`: PNG pictures + index.md) when `tbg train` ends
    max_edges_per_chunk: int = attrs.field(default=10_000_000, validator=_positive)  # huge buckets: read in chunks


# ----------------------------------------------------------------------------- model


@attrs.define(kw_only=True)
class EmbeddingSnapshot:
    emb_name: str
    embedding_snapshot_uri: str


@attrs.define(kw_only=True)
class EmbeddingTableConfig:
    name: str = attrs.field(validator=_non_empty)
    num_embeddings: int | None = attrs.field(default=None, validator=_positive)
    embedding_dim: int = attrs.field(validator=_positive)
    optimizer: OptimizerConfig
    data_type: DataType = DataType.fp32
    pretrained: EmbeddingSnapshot | None = None
    vocab: str | None = None
    # tbg extensions
    num_partitions: int = attrs.field(default=1, validator=_positive)
    init_scale: float | None = attrs.field(default=None, validator=[_finite, _positive])


@attrs.define(kw_only=True)
class EmbeddingsConfig:
    tables: list[EmbeddingTableConfig] = attrs.field(validator=_non_empty)
    tables_to_log: list[str] | None = None


@attrs.define(kw_only=True)
class RelationConfig:
    name: str = attrs.field(validator=_non_empty)
    lhs: str
    rhs: str
    operator: str = attrs.field(default="translation", validator=_registered("operator"))
    weight: float = attrs.field(default=1.0, validator=[_finite, _positive])


@attrs.define(kw_only=True)
class ModelConfig:
    embeddings: EmbeddingsConfig
    relations: list[RelationConfig] = attrs.field(validator=_non_empty)
    translation_optimizer: OptimizerConfig
    # tbg extensions
    comparator: str = attrs.field(default="dot", validator=_registered("comparator"))
    loss: str = attrs.field(default="logistic", validator=_registered("loss"))
    margin: float = attrs.field(default=0.1, validator=_finite)
    relation_sides: RelationSides = RelationSides.both

    def table(self, name: str) -> EmbeddingTableConfig:
        return next(t for t in self.embeddings.tables if t.name == name)


# ----------------------------------------------------------------------------- data


@attrs.define(kw_only=True)
class DataConfig:
    data_root: str = attrs.field(validator=_non_empty)
    per_replica_batch_size: int = attrs.field(default=1000, validator=_positive)
    global_negatives: int = attrs.field(default=0, validator=_non_negative)
    in_batch_negatives: int = attrs.field(default=0, validator=_non_negative)
    limit: int | None = attrs.field(default=None, validator=_positive)
    offset: int | None = attrs.field(default=None, validator=_non_negative)
    # tbg extension, where in-batch negatives come from: `relation` (TwHIN: S edges of each relation in the
    # batch, shared by its edges), `batch` (S edges of the whole batch, shared by all), `chunk` (PBG: the batch
    # is cut into chunks of S edges; each chunk's edges are negatives for one another)
    in_batch_scope: InBatchScope = InBatchScope.relation
    # tbg extension, who shares one draw of global_negatives uniform samples: the whole batch (TwHIN), or
    # chunks (needs in_batch_scope chunk): global_negatives_chunks_per_draw consecutive chunks per draw
    global_negatives_scope: GlobalNegativesScope = GlobalNegativesScope.batch
    # tbg extension, with global_negatives_scope chunk: consecutive chunks sharing one draw (1: PBG exactly)
    global_negatives_chunks_per_draw: int = attrs.field(default=1, validator=_positive)

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

    lhs: str | int = "lhs"
    rel: str | int | None = "rel"
    rhs: str | int = "rhs"
    weight: str | int | None = None


@attrs.define(kw_only=True)
class GraphConfig:
    """tbg extension: where the imported graph lives and how to read the sources."""

    dir: str | None = None  # default: <training.save_dir>/graph
    id_mode: IdMode = IdMode.indices
    format: SourceFormat | None = None  # default: from the file extension
    delimiter: str | None = None  # default: tab for tsv, comma for csv
    header: bool = False
    columns: ColumnsConfig | None = None  # default: lhs/rel/rhs by name (parquet, header) or 0/1/2
    relation_by: str = "auto"  # auto | name | index
    chunk_rows: int = attrs.field(default=1 << 20, validator=_positive)
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if self.relation_by not in ("auto", "name", "index"):
            raise _FieldProblem("relation_by", f"must be auto, name or index, got {self.relation_by!r}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise _FieldProblem("delimiter", f"must be a single character, got {self.delimiter!r}")


@attrs.define(kw_only=True)
class EvalConfig:
    """tbg extension: how ``tbg eval`` ranks."""

    candidates: Candidates = Candidates.all
    filtered: bool = True
    hits_at: list[int] = attrs.field(factory=lambda: [1, 3, 10])
    batch_size: int = attrs.field(default=1000, validator=_positive)
    num_uniform_negatives: int = attrs.field(default=1000, validator=_non_negative)
    num_batch_negatives: int = attrs.field(default=50, validator=_non_negative)
    split: str = "test"

    def __attrs_post_init__(self) -> None:
        if any(k <= 0 for k in self.hits_at):
            raise _FieldProblem("hits_at", f"every k must be > 0, got {self.hits_at}")
        if self.split not in ("test", "valid", "train"):
            raise _FieldProblem("split", f"must be test, valid or train, got {self.split!r}")


# ----------------------------------------------------------------------------- top level


@attrs.define(kw_only=True)
class Config:
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig)
    training: TrainingConfig = attrs.field(factory=TrainingConfig)
    model: ModelConfig
    train_data: DataConfig
    validation_data: DataConfig
    # tbg extensions
    test_data: DataConfig | None = None
    graph: GraphConfig = attrs.field(factory=GraphConfig)
    eval: EvalConfig = attrs.field(factory=EvalConfig)

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

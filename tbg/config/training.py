"""The `training` section: save dir, run length, logging, validation, checkpoints, bucket order."""

from __future__ import annotations

import attrs

from tbg.config.fields import ConfigEnum, finite, positive, setting


class BucketOrder(ConfigEnum):
    buffer = "buffer"
    inside_out = "inside_out"
    affinity = "affinity"
    random = "random"


class TrainOn(ConfigEnum):
    all = "all"
    appended = "appended"


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
        validator=positive,
    )
    initial_checkpoint_dir: str | None = setting(
        "warm start from this tbg checkpoint (a save_dir, its `checkpoints` dir or a version dir): its vectors and"
        " relation parameters, step 0; a checkpoint of the graph before a `tbg import --append` fits too (its"
        " rows are copied, the entities the append added start from the initialisation)",
        twhin="warm start",
        default=None,
    )
    warm_start_optimizer: bool = setting(
        "a warm start also copies the optimizer state of the checkpoint's rows and relation parameters (new rows"
        " start with a fresh state); state of another optimizer kind is not used",
        default=False,
        ext=True,
    )
    train_on: TrainOn = setting(
        "`all`: every training edge; `appended`: only the training edges the latest `tbg import --append` added"
        " (e.g. to fit a warm-started model to the new entities first)",
        default=TrainOn.all,
        ext=True,
    )
    checkpoint_every_n: int = setting(
        "checkpoint every N steps and at the end",
        twhin="only on steps that are also log steps",
        default=1000,
        validator=positive,
    )
    checkpoint_max_to_keep: int | None = setting(
        "prune older checkpoint versions beyond this many",
        twhin="ignored",
        default=None,
        validator=positive,
        default_doc="none: keep all",
    )
    train_log_every_n: int = setting(
        "log loss and edges/s to the progress bar and `metrics.jsonl` every N steps",
        twhin="log interval",
        default=1000,
        validator=positive,
    )
    num_eval_steps: int = setting(
        "validation batches per validation pass; < 0: the whole validation split", twhin="ignored", default=16384
    )
    eval_log_every_n: int = setting("run validation every N steps", twhin="ignored", default=5000, validator=positive)
    eval_timeout_in_s: float = setting(
        "time limit of one validation pass (the loss of the batches scored by then is logged)",
        twhin="ignored",
        default=3600.0,
        validator=[finite, positive],
    )
    gradient_accumulation: int | None = setting(
        "parameters move every N batches with the summed gradients of all N (also at bucket ends and"
        " checkpoints); steps and schedules count batches",
        twhin="passed to the pipeline (its fused embedding SGD ignores it)",
        default=None,
        validator=positive,
        default_doc="none: every batch",
    )
    num_epochs: int = setting(
        "passes over all buckets", twhin="ignored (infinite stream)", default=1, validator=positive
    )
    bucket_order: BucketOrder = setting(
        "the order buckets are visited in: `buffer` plans for the partitions a memory budget lets stay resident"
        " (Marius-style; without a budget it keeps one of the bucket's two, as `inside_out` does), `inside_out`"
        " and `affinity` are PBG's, `random` a shuffle",
        default=BucketOrder.buffer,
        ext=True,
    )
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
        validator=positive,
        ext=True,
    )

"""The `graph` section (tbg extension): where the imported graph lives and how the sources are read."""

from __future__ import annotations

import attrs

from tbg.config.fields import ConfigEnum, FieldProblem, positive, setting


class IdMode(ConfigEnum):
    indices = "indices"
    names = "names"


class SourceFormat(ConfigEnum):
    parquet = "parquet"
    tsv = "tsv"
    csv = "csv"


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
        "rows per streamed record batch (bounds import memory)", default=1 << 20, validator=positive
    )
    seed: int = setting("seed of the entity shuffle that assigns partitions", default=0)

    def __attrs_post_init__(self) -> None:
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise FieldProblem("delimiter", f"must be a single character, got {self.delimiter!r}")

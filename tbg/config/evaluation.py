"""The `eval` section (tbg extension): how `tbg eval` ranks."""

from __future__ import annotations

import attrs

from tbg.config.fields import ConfigEnum, FieldProblem, non_negative, positive, setting


class Candidates(ConfigEnum):
    all = "all"
    seen = "seen"
    sampled = "sampled"


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
    batch_size: int = setting("test edges ranked per batch", default=1000, validator=positive)
    num_uniform_negatives: int = setting(
        "uniform candidates per edge with `candidates: sampled`", default=1000, validator=non_negative
    )
    num_batch_negatives: int = setting(
        "in-batch candidates per edge with `candidates: sampled`", default=50, validator=non_negative
    )
    split: str = setting("the split to rank", default="test", choices=("test", "valid", "train"))

    def __attrs_post_init__(self) -> None:
        if any(k <= 0 for k in self.hits_at):
            raise FieldProblem("hits_at", f"every k must be > 0, got {self.hits_at}")

"""One name lookup for the Python API (``TrainedModel``) and the query engine: the same names are known, the same
are unknown (indices mode: an id only as ``str(id)`` or an int; ``"05"`` is not entity 5), one QueryError."""

from __future__ import annotations

import re

import numpy as np
import pytest
from builders import integer_model, make_config, write_checkpoint, write_graph

import tbg
from tbg.errors import QueryError
from tbg.query.entities import EntityNames

UNKNOWN_INDEX_NAMES = ["05", "+5", "-0", " 5", "5 ", "５", "²", "5.0", "12", "-1", "", "x", 5.0, True]


def _model(tmp_path, names: bool):
    cfg = make_config(tmp_path / "graph", save_dir=tmp_path / "run", types={"node": (12, 4, 2)})
    edges = (np.arange(6), np.zeros(6, dtype=np.int64), np.arange(6)[::-1].copy())
    perms = write_graph(cfg, {"train": edges}, names=names)
    dense = {"node": np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)}
    write_checkpoint(cfg, perms, dense, integer_model(cfg, seed=0))
    return tbg.load(str(tmp_path / "run")), dense["node"]


@pytest.mark.parametrize("names", [False, True])
def test_api_and_queries_resolve_names_alike(tmp_path, names: bool) -> None:
    model, dense = _model(tmp_path, names)
    lookup = EntityNames(model.graph, "node")
    known = list(model.entity_names("node"))
    assert model.ids("node", known).tolist() == lookup.ids(known).tolist() == list(range(12))
    np.testing.assert_array_equal(model.vector("node", known[3]), dense[3])
    if not names:
        assert model.ids("node", [5, "5", np.int64(7)]).tolist() == [5, 5, 7]
    unknown = UNKNOWN_INDEX_NAMES if not names else ["nobody", "node/é12", "", 3]
    for name in unknown:
        shown = re.escape(repr(str(name)))  # beside a str, a number is named as its str()
        with pytest.raises(QueryError, match=f"^unknown node {shown}$"):
            model.ids("node", [known[0], name])
        with pytest.raises(QueryError, match=f"^row 2: unknown node {shown}$"):
            lookup.positions([known[0], name], ["row 1", "row 2"])

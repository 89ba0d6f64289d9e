"""Fuzzing the config loader through `tbg import` (hypothesis): random YAML text, random YAML documents and
random ``key.path: value`` edits of a valid config.  Each is a working import or one clear error line."""

from __future__ import annotations

import copy
import math
import os
import tempfile

import pytest
import yaml
from fuzz_helpers import FUZZ, assert_one_error_line, check_graph_consistent, fuzz_config, import_with, run_cli
from hypothesis import event, given
from hypothesis import strategies as st

# generated text may hold line breaks: the CLI escapes control characters, so an error stays one line (F14)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["fp16", "adagrad", "names", "indices", "tsv", "auto", "-1", "1e3", "cuda:7", "all"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(TEXT, inner, max_size=3)),
                      max_leaves=6)  # fmt: skip


def _outcome(work: str, cfg) -> int:
    rc, err = import_with(work, cfg)
    event(f"exit {rc}")
    if rc != 0:
        assert_one_error_line(rc, err)
    else:
        check_graph_consistent(os.path.join(work, "g"))
    return rc


def _valid_config(work: str) -> dict:
    source = os.path.join(work, "train.tsv")
    with open(source, "w") as fh:
        fh.write("u1\tfav\tt1\nu2\tfollow\tu1\nu3\tfav\tt2\n")
    return fuzz_config(os.path.join(work, "g"), source)


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=200).filter(lambda t: "\n" not in t.strip()),
        VALUES.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    )
)
def test_random_yaml_is_one_clear_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        _outcome(work, text)


def _paths(doc, prefix=()):
    """Every key path of a nested dict/list document (dicts and lists included)."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def _like(current) -> st.SearchStrategy:
    """A value of the same type as ``current`` (so edits often stay loadable)."""
    if isinstance(current, bool):
        return st.booleans()
    if isinstance(current, int):
        return st.integers(-2, 2 * current + 2)
    if isinstance(current, float):
        return st.floats(allow_nan=True, allow_infinity=True)
    if isinstance(current, str):
        return st.one_of(st.just(current), TEXT, st.sampled_from(["user", "tweet", "fav", "none"]))
    return VALUES


def _set(doc, path, value, new_key: str | None):
    target = doc
    for p in path[:-1]:
        target = target[p]
    if new_key is not None and isinstance(target[path[-1]], dict):
        target[path[-1]][new_key] = value
    else:
        target[path[-1]] = value


@FUZZ
@given(data=st.data(), edits=st.integers(1, 3))
def test_random_key_path_edits_are_one_clear_line(data, edits: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        cfg = copy.deepcopy(_valid_config(work))
        for _ in range(edits):
            paths = [p for p in _paths(cfg) if p]
            path = data.draw(st.sampled_from(paths))
            new_key = data.draw(st.one_of(st.none(), st.sampled_from(["lr", "name", "weight", "x", "num_partitions"])))
            value = data.draw(st.one_of(VALUES, _like(_get(cfg, path))))
            _set(cfg, path, value, new_key)
        _outcome(work, cfg)


@FUZZ
@given(
    key=st.sampled_from(["embedding_dim", "num_partitions", "num_embeddings", "data_type", "optimizer", "name"]),
    value=SCALARS,
)
def test_table_fields_with_any_scalar(key: str, value) -> None:
    with tempfile.TemporaryDirectory() as work:
        cfg = _valid_config(work)
        cfg["model"]["embeddings"]["tables"][0][key] = value
        rc = _outcome(work, cfg)
        if rc == 0 and key in ("embedding_dim", "num_partitions"):
            assert isinstance(value, int) and not isinstance(value, bool) and value > 0
        if isinstance(value, float) and not math.isfinite(value):
            assert rc == 2


@pytest.mark.parametrize("kind", ["non_utf8", "directory"])
def test_unreadable_config_is_one_clear_line(kind: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        if kind == "non_utf8":
            rc, err = import_with(work, b"\xff\xfe: 1\nmodel: {}\n")
        else:
            rc, err = run_cli(["import", work, "--no-progress"])
        assert_one_error_line(rc, err)


@pytest.mark.parametrize("where", ["table_name", "unknown_key"])
def test_line_breaks_in_config_names_stay_on_one_line(where: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        cfg = _valid_config(work)
        if where == "table_name":
            cfg["model"]["embeddings"]["tables"][0]["name"] = "us\ner"
        else:
            cfg["model"]["embeddings"]["tables"][0]["a\nb"] = 1
        rc, err = import_with(work, cfg)
        assert_one_error_line(rc, err)

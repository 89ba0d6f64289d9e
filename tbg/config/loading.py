"""Reading configs: YAML (local path or fsspec URL) -> strict cattrs structuring -> :class:`Config`.

Every problem becomes one :class:`ConfigError` line ``FILE: dotted.path: problem``; with several problems the
first is shown and the rest counted.
"""

from __future__ import annotations

import copy
import enum
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

import attrs
import cattrs
import cattrs.cols
import cattrs.gen
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from tbg.config.fields import ConfigEnum, FieldProblem, field_types
from tbg.config.model import PartitionCount
from tbg.config.schema import Config, check_references
from tbg.errors import ConfigError


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false are booleans, so ``cpu_bf16: off`` stays the string "off"."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def read_yaml(text: str) -> Any:
    """Config YAML as tbg reads it everywhere (files, ``--set`` values, checkpoints' config.yaml)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader subclass)


def _strict(kind: type, name: str):
    def hook(value: Any, _type: Any) -> Any:
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer, got {value!r}")
            return value
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true/false, got {value!r}")
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value

    hook.__name__ = f"strict_{name}"
    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for kind in (int, float, bool, str):
        conv.register_structure_hook(kind, _strict(kind, kind.__name__))

    def enum_hook(value: Any, cls: type[enum.Enum]) -> Any:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"must be one of {choices}, got {value!r}") from None

    for enum_type in ConfigEnum.__subclasses__():
        conv.register_structure_hook(enum_type, enum_hook)

    def column_hook(value: Any, _type: Any) -> str | int | None:
        if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            if isinstance(value, int) and value < 0:
                raise ValueError(f"column position must be >= 0, got {value}")
            return value
        raise ValueError(f"expected a column name or 0-based position, got {value!r}")

    def partitions_hook(value: Any, _type: Any) -> int | str:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ValueError(f"expected a partition count or auto, got {value!r}")

    conv.register_structure_hook_func(lambda t: t == PartitionCount, partitions_hook)
    conv.register_structure_hook(str | int, column_hook)
    conv.register_structure_hook(str | int | None, column_hook)

    def betas_hook(value: Any, _type: Any) -> tuple[float, float]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"expected two numbers, got {value!r}")
        return (_strict(float, "f")(value[0], float), _strict(float, "f")(value[1], float))

    conv.register_structure_hook_func(lambda t: t == tuple[float, float], betas_hook)

    # A section or list item that is not a mapping (``model: null``, ``relations: [fav]``), or a list key given a
    # scalar (``hits_at: "10"``, which would otherwise be split into characters), gets a one-line message.
    def mapping_factory(cls: type) -> Any:
        inner = cattrs.gen.make_dict_structure_fn(
            cls, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
        )

        def hook(value: Any, type_: Any) -> Any:
            if not isinstance(value, dict):
                raise ValueError(f"expected a mapping, got {value!r}")
            return inner(value, type_)

        return hook

    def list_factory(type_: Any) -> Any:
        inner = cattrs.cols.list_structure_factory(type_, conv)

        def hook(value: Any, t: Any) -> Any:
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {value!r}")
            return inner(value, t)

        return hook

    conv.register_structure_hook_factory(attrs.has, mapping_factory)
    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is list, list_factory)
    for enum_type in ConfigEnum.__subclasses__():
        conv.register_unstructure_hook(enum_type, lambda v: v.value)
    conv.register_unstructure_hook_func(lambda t: t == tuple[float, float], list)
    return conv


converter = _make_converter()


def _format_path(path: str) -> str:
    return path[2:] if path.startswith("$.") else path.lstrip("$")


def _messages(exc: BaseException, path: str) -> list[str]:
    """Flatten cattrs' nested exception groups into ``dotted.path: problem`` lines."""
    if isinstance(exc, ClassValidationError):
        out = []
        for sub, note in zip(exc.exceptions, _notes(exc)):
            name = getattr(note, "name", None)
            out += _messages(sub, f"{path}.{name}" if name else path)
        return out
    if isinstance(exc, IterableValidationError):
        out = []
        for sub, note in zip(exc.exceptions, _notes(exc)):
            index = getattr(note, "index", None)
            out += _messages(sub, f"{path}[{index}]" if index is not None else path)
        return out
    if isinstance(exc, ForbiddenExtraKeysError):
        return [f"{_format_path(path + '.' + key)}: unknown key" for key in sorted(exc.extra_fields)]
    if isinstance(exc, FieldProblem):
        full = f"{path}.{exc.field}" if exc.field else path
        return [f"{_format_path(full) or '<top>'}: {exc.problem}"]
    if isinstance(exc, KeyError):
        return [f"{_format_path(path) or '<top>'}: required key missing"]
    if hasattr(exc, "exceptions"):  # any other exception group
        return [m for sub in exc.exceptions for m in _messages(sub, path)]
    return [f"{_format_path(path) or '<top>'}: {exc}"]


def _notes(exc: BaseException) -> list[Any]:
    from cattrs.errors import AttributeValidationNote, IterableValidationNote

    out = []
    for sub in exc.exceptions:  # type: ignore[attr-defined]
        notes = [
            n for n in getattr(sub, "__notes__", []) if isinstance(n, (AttributeValidationNote, IterableValidationNote))
        ]
        out.append(notes[-1] if notes else None)
    return out


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Structure a YAML mapping into :class:`Config`, raising one-line :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping, got {type(data).__name__}")
    try:
        cfg = converter.structure(data, Config)
    except (ClassValidationError, IterableValidationError) as exc:
        problems = _messages(exc, "$")
        raise ConfigError(_one_line(source, problems)) from None
    problems = check_references(cfg)
    if problems:
        raise ConfigError(_one_line(source, problems))
    return cfg


def _one_line(source: str, problems: list[str]) -> str:
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{source}: {problems[0]}{more}"


def load_config(path: str, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config from a local path or any fsspec URL, then apply ``--set`` ``overrides``."""
    import fsspec

    try:
        with fsspec.open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the config must be a YAML mapping, got {type(data).__name__}")
        data = apply_overrides(data, overrides, path)
    return parse_config(data, path)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- --set overrides

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def parse_path(dotted: str) -> list[str | int]:
    """``model.relations[2].operator`` -> ``["model", "relations", 2, "operator"]`` (the paths errors print)."""
    steps: list[str | int] = []
    for part in dotted.split("."):
        match = _STEP.fullmatch(part)
        if match is None:
            raise ValueError(f"{dotted!r} is not a dotted path like model.relations[2].operator")
        steps.append(match.group(1))
        steps += [int(index) for index in re.findall(r"\d+", match.group(2))]
    return steps


def format_path(steps: Sequence[str | int]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str = "<config>") -> dict[str, Any]:
    """A copy of the YAML mapping ``data`` with each ``dotted.key=value`` set; values are parsed as YAML.

    The path must name a key of the schema (so a typo fails here with the usual one-line error); missing
    sections along it are created, list items must exist.  The result is validated by :func:`parse_config`.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        try:
            if not sep:
                raise ValueError("expected dotted.key=value")
            steps = parse_path(key.strip())
            value = read_yaml(text)
        except (ValueError, yaml.YAMLError) as exc:
            problem = str(exc).splitlines()[0]
            raise ConfigError(f"{source}: --set {item!r}: {problem}") from None
        problem_at = _check_schema_path(steps) or _assign(data, steps, value)
        if problem_at is not None:
            where, problem = problem_at
            raise ConfigError(f"{source}: {format_path(where)}: {problem} (--set {item})")
    return data


def _check_schema_path(steps: list[str | int]) -> tuple[list[str | int], str] | None:
    """The first step of ``steps`` that the schema does not have, with the problem; None when all exist."""
    kind: Any = Config
    for i, step in enumerate(steps):
        kind = _without_none(kind)
        origin = typing.get_origin(kind)
        if isinstance(step, int):
            if origin is not list:
                return steps[: i + 1], "not a list"
            kind = typing.get_args(kind)[0]
        elif attrs.has(kind):
            types = field_types(kind)
            if step not in types:
                return steps[: i + 1], "unknown key"
            kind = types[step]
        elif origin is dict or kind is Any:
            kind = Any
        else:
            return steps[: i + 1], "unknown key (its parent is not a mapping)"
    return None


def _assign(data: dict[str, Any], steps: list[str | int], value: Any) -> tuple[list[str | int], str] | None:
    node: Any = data
    for i, step in enumerate(steps[:-1]):
        nxt = steps[i + 1]
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                count = len(node) if isinstance(node, list) else 0
                return steps[: i + 1], f"no such item (the config has {count})"
            node = node[step]
        else:
            if node.get(step) is None:
                if isinstance(nxt, int):
                    return steps[: i + 2], "no such item (the config has 0)"
                node[step] = {}
            node = node[step]
        if not isinstance(node, (dict, list)):
            return steps[: i + 1], f"expected a mapping or list in the config, got {node!r}"
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            count = len(node) if isinstance(node, list) else 0
            return steps, f"no such item (the config has {count})"
    elif not isinstance(node, dict):
        return steps[:-1], f"expected a mapping in the config, got {node!r}"
    node[last] = value
    return None


def _without_none(kind: Any) -> Any:
    """``X | None`` -> ``X`` (other unions are left alone)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return kind

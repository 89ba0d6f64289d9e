"""How a config field is declared: ``setting`` (an attrs field carrying its docs), validators, the enum base.

Field validators raise :class:`FieldProblem` so that the loader can name the dotted path of the offending key,
e.g. ``model.relations[1].lhs: unknown table 'usr'``.
"""

from __future__ import annotations

import enum
import functools
import math
import typing
from collections.abc import Callable, Iterable
from typing import Any

import attrs


class FieldProblem(ValueError):
    """Raised by field validators so the error path can name the field itself."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


# ----------------------------------------------------------------------------- validators


def positive(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None and not value > 0:
        raise FieldProblem(attr.name, f"must be > 0, got {value!r}")


def non_negative(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise FieldProblem(attr.name, f"must be >= 0, got {value!r}")


positive.bound = "> 0"  # type: ignore[attr-defined]
non_negative.bound = "≥ 0"  # type: ignore[attr-defined]


def finite(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None and not math.isfinite(value):
        raise FieldProblem(attr.name, f"must be a finite number, got {value!r}")


def non_empty(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None and len(value) == 0:
        raise FieldProblem(attr.name, "must not be empty")


def one_of(names: Callable[[], Iterable[str]]) -> Any:
    """Validator: the value is one of ``names()`` (the same message as an enum field's)."""

    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        allowed = list(names())
        if value not in allowed:
            raise FieldProblem(attr.name, f"must be one of {', '.join(allowed)}, got {value!r}")

    return check


def registries() -> dict[str, Any]:
    # imported on first use: torch-free declaration modules, found after any plugin has registered
    from tbg.model.comparators import COMPARATORS
    from tbg.model.losses import LOSSES
    from tbg.model.operators import OPERATORS

    return {"operator": OPERATORS, "comparator": COMPARATORS, "loss": LOSSES}


def registered_names(kind: str) -> Callable[[], Iterable[str]]:
    """The registered names of ``kind``, looked up when the docs are rendered (plugins included)."""
    return lambda: registries()[kind].names()


def exactly_one(instance: Any, group: tuple[str, ...], what: str) -> None:
    chosen = [name for name in group if getattr(instance, name) is not None]
    if len(chosen) != 1:
        raise FieldProblem("", f"exactly one of {'/'.join(group)} must be set for {what}, got {chosen or 'none'}")


def setting(
    help: str,
    *,
    twhin: str | None = None,
    ext: bool = False,
    default_doc: str | None = None,
    choices: tuple[str, ...] | None = None,
    registry: str | None = None,
    validator: Any = None,
    **kwargs: Any,
) -> Any:
    """An ``attrs.field`` that carries its documentation in ``metadata`` (docs/config.md is generated from it).

    ``help`` is what tbg does with the key, ``twhin`` what TwHIN's release does with it (when that differs or
    matters), ``ext`` marks a tbg extension, ``default_doc`` explains a default that its value alone does not,
    ``choices`` lists the accepted strings of a string field, ``registry`` names the registry (operator,
    comparator, loss) whose names are accepted, looked up when validating or rendering the docs (plugins
    included); either adds the check.  Validators with a ``bound`` attribute ("> 0") add it to the documented type.
    """
    validators = list(validator) if isinstance(validator, (list, tuple)) else [validator] if validator else []
    listed: Callable[[], Iterable[str]] | None = None
    if registry is not None:
        listed = registered_names(registry)
    elif choices is not None:
        listed = lambda: choices  # noqa: E731
    if listed is not None:
        validators.append(one_of(listed))
    bounds = [v.bound for v in validators if hasattr(v, "bound")]
    metadata = {
        "help": help,
        "twhin": twhin,
        "ext": ext,
        "default_doc": default_doc,
        "bound": " ".join(bounds),
        "choices": listed,
    }
    return attrs.field(validator=validators or None, metadata=metadata, **kwargs)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of each field of the attrs class ``cls`` (the config modules postpone annotations)."""
    return typing.get_type_hints(cls)


class ConfigEnum(str, enum.Enum):
    """A string-valued config enum; the loader accepts and writes its values (every subclass is one)."""

    def __str__(self) -> str:
        return self.value

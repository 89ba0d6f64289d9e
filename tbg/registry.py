"""Named pluggable parts (operators, comparators, losses), looked up by the name a config uses.

A small PBG ``PluginRegistry`` / PyKEEN ``class_resolver``: a class registers itself with a decorator, the
config validates names against :meth:`Registry.names`, and the model builds what :meth:`Registry.resolve`
returns.  Adding a part is one registered class; nothing else lists the names.  Torch-free, so
``tbg.config`` can check names without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes of one kind (``kind`` names it in messages), keyed by their config name, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: store the class under ``name`` and set its ``name`` attribute to it.

        Registering a second class under a taken name is an error (a plugin must pick its own name).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def decorator(cls: T) -> T:
            if self._classes.get(name, cls) is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._classes[name].__qualname__})")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorator

    def resolve(self, name: str) -> T:
        """The class registered as ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
        try:
            return self._classes[str(name)]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r} (choices: {', '.join(self.names())})") from None

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

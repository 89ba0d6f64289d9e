"""tbg: partitioned graph embeddings in the style of PyTorch-BigGraph, driven by TwHIN-style YAML configs.

The Python API (docs/python-api.md, implemented in :mod:`tbg.api`)::

    cfg = tbg.load_config("configs/local.yaml", ["training.save_dir=runs/x"])
    tbg.import_graph(cfg); tbg.train(cfg); report = tbg.evaluate(cfg, split="test")
    tbg.export(cfg, "npy", "runs/x/export"); model = tbg.load("runs/x")

Its names resolve lazily, so ``import tbg`` stays light (no torch).  ``tbg.train`` and ``tbg.export`` are also
the subpackage/module of those names: :class:`_Package` makes those two modules callable, so that both
``tbg.train(cfg)`` and ``from tbg.train.trainer import Trainer`` keep working whatever was imported first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_API = ("load_config", "import_graph", "train", "evaluate", "export", "load")
_CALLABLE_MODULES = ("train", "export")  # API names that are also submodules of this package


class _CallableModule(types.ModuleType):
    """A submodule that, called, runs the API function of its name (``tbg.export(cfg, fmt, out)``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        api = importlib.import_module("tbg.api")
        return getattr(api, self.__name__.rsplit(".", 1)[-1])(*args, **kwargs)


class _Package(types.ModuleType):
    """The ``tbg`` package: the import system binds a loaded submodule with setattr; make the two callable."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"tbg.{name}")  # binds it here (callable) as a side effect
    if name in _API:
        return getattr(importlib.import_module("tbg.api"), name)
    raise AttributeError(f"module 'tbg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


sys.modules[__name__].__class__ = _Package
__all__ = [*_API, "__version__"]

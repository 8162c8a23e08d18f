"""Heavy libraries imported on first use, so listing options, ``--help`` and a typo's error line
answer without loading torch, transformers, datasets or Lightning.

Every module that registers a config entry is imported to build the config schemas; those modules
name the heavy libraries through these proxies instead of importing them:

    from assay.lazy import F, datasets, torch

``torch.zeros(3)`` then imports torch on that first call; after it, an attribute lookup costs one
extra Python call.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable


class LazyModule:
    """Stands for the module ``name`` and imports it when an attribute is first read."""

    __slots__ = ("_lazy_name", "_lazy_module")

    def __init__(self, name: str):
        self._lazy_name = name
        self._lazy_module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._lazy_module
        if module is None:
            module = self._lazy_module = importlib.import_module(self._lazy_name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "imported" if self._lazy_module is not None else "not imported yet"
        return f"<lazy module {self._lazy_name!r} ({state})>"


def lazy_function(module: str, name: str) -> Callable[..., Any]:
    """``module.name`` (a function), imported at its first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported at its first call."
    return call


torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")
datasets = LazyModule("datasets")
pd = LazyModule("pandas")
pl = LazyModule("pytorch_lightning")
transformers = LazyModule("transformers")

HEAVY = ("torch", "transformers", "datasets", "pytorch_lightning", "lightning_fabric", "pandas", "peft")
"""What the command-line paths that only compose and validate must not import."""

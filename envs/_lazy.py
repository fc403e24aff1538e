"""A package ``__getattr__`` (PEP 562) that imports each public name's module on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """
    The ``__getattr__`` of ``package``: ``exports`` maps each public name to the submodule (relative to ``package``)
    that defines it; that submodule is imported when the name is first asked for.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__

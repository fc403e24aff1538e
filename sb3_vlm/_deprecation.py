"""Module ``__getattr__`` (PEP 562) for names imported on first use and for deprecated names kept for one release."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["module_getattr"]


def _resolve(target: str) -> Any:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def module_getattr(
    module: str, lazy: Mapping[str, str] | None = None, moved: Mapping[str, str] | None = None
) -> Callable[[str], Any]:
    """
    The ``__getattr__`` of ``module``: each name of ``lazy`` is imported when first asked for; each name of ``moved``
    (an old name) resolves to its new object with a ``DeprecationWarning`` naming the new path.

    :param module: The module's ``__name__``.
    :param lazy: Public name -> ``"package.module.Name"`` that defines it.
    :param moved: Deprecated name -> its replacement, ``"package.module.Name"``.
    :return: The function to assign to the module's ``__getattr__``.
    """
    lazy, moved = dict(lazy or {}), dict(moved or {})

    def __getattr__(name: str) -> Any:
        if name in lazy:
            return _resolve(lazy[name])
        if name in moved:
            warnings.warn(
                f"{module}.{name} is deprecated and will be removed in the next release: use {moved[name]}",
                DeprecationWarning,
                stacklevel=2,
            )
            return _resolve(moved[name])
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__

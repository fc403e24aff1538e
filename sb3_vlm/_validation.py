"""Argument checks shared by the settings dataclasses and constructors (standard library only)."""

from __future__ import annotations

import numbers
import warnings
from typing import Any, TypeVar

__all__ = ["check_int", "check_positive", "settings_from"]

S = TypeVar("S")


def check_int(value: Any, name: str, minimum: int = 1, *, owner: str | None = None, note: str | None = None) -> int:
    """
    ``value`` as an ``int``, if it is a whole number (not a bool) of at least ``minimum``.

    :param value: The value to check (``int`` or a numpy integer).
    :param name: The argument or field it was given as, named in the error.
    :param minimum: Smallest value accepted (1: a positive int, a count).
    :param owner: Class or function the value was given to, named at the start of the error.
    :param note: A few words the error adds after what is expected, in parentheses: a unit (``"steps"``), a hint.
    :return: ``int(value)``.
    :raises ValueError: naming ``owner``, ``name``, what is expected and what was given, e.g.
        ``"generate_pairs: horizon must be a positive int (steps), got 0"``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        need = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        where = f"{owner}: " if owner else ""
        what = f" ({note})" if note else ""
        raise ValueError(f"{where}{name} must be {need}{what}, got {value!r}")
    return int(value)


def check_positive(value: Any, name: str, *, owner: str | None = None) -> float:
    """
    ``value`` as a ``float``, if it is a number > 0 (NaN is not).

    :param value: The value to check (a weight, a norm, a learning rate).
    :param name: The argument or field it was given as, named in the error.
    :param owner: Class or function the value was given to, named at the start of the error.
    :raises ValueError: e.g. ``"GradientClippingCallback: max_norm must be > 0, got 0"``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{f'{owner}: ' if owner else ''}{name} must be > 0, got {value!r}")
    return float(value)


def settings_from(cls: type[S], settings: Any, args: tuple[Any, ...], kwargs: dict[str, Any], caller: str) -> S:
    """
    The settings of a call that takes a settings dataclass ``cls``: ``settings`` itself, ``cls()`` when nothing is
    given, or (the call form of sb3-vlm 0.1, deprecated: a ``DeprecationWarning`` for one release) ``cls`` built from
    the positional arguments ``settings, *args`` and the keyword arguments, which keep their names and order.

    :param cls: The settings dataclass.
    :param settings: The call's settings argument: a ``cls``, None, or the first of the old positional arguments.
    :param args: Further old positional arguments.
    :param kwargs: Old keyword arguments (the names of ``cls``'s fields).
    :param caller: The call, as the user wrote it (``"VLMJudge"``), named in the warning and the errors.
    :raises TypeError: for a ``cls`` given together with other arguments.
    """
    if isinstance(settings, cls):
        if args or kwargs:
            given = [*(repr(a) for a in args), *sorted(kwargs)]
            raise TypeError(f"{caller}: pass a {cls.__name__} or separate arguments, not both (got also {given})")
        return settings
    positional = args if settings is None else (settings, *args)
    if not positional and not kwargs:
        return cls()
    warnings.warn(
        f"{caller}: the settings as separate arguments are deprecated and will be removed in the next release; pass "
        f"a {cls.__name__} with the same names instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return cls(*positional, **kwargs)

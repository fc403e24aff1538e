"""Argument helpers shared by the subcommands (one parser per kind of value)."""

from __future__ import annotations

import argparse
import ast

import yaml


def image_size(text: str) -> tuple[int, int]:
    """``"56x84"`` (or ``"56,84"``) -> ``(56, 84)``; an ``argparse`` type."""
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 56x84, got {text!r}")
    return int(parts[0]), int(parts[1])


def positive_int(text: str) -> int:
    """An integer >= 1 (a step count, a number of envs); an ``argparse`` type."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def int_list(text: str) -> list[int]:
    """``"3,4,5"`` -> ``[3, 4, 5]`` (empty items skipped); an ``argparse`` type."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas such as 3,4,5, got {text!r}") from None


def options(args: argparse.Namespace, *names: str) -> dict[str, object]:
    """``{name: args.<name>}`` for options passed on unchanged to a library call."""
    return {name: getattr(args, name) for name in names}


def parse_worlds(text: str | None) -> str | list[int] | None:
    """A split name (``"train"``, ``"fit"``, ``"val"``, ``"test"``, ``"all"``) or None as is; ``"0,6,12"`` ->
    ``[0, 6, 12]``."""
    if text is None or text in ("train", "fit", "val", "test", "all"):
        return text
    try:
        return int_list(text)
    except argparse.ArgumentTypeError:
        raise ValueError(f"--worlds must be train, fit, val, test, all or comma-separated ids, got {text!r}") from None


def hyperparam(text: str) -> tuple[str, object]:
    """``"learning_rate:1e-5"`` -> ``("learning_rate", 1e-5)``: rl-zoo3's ``--hyperparams KEY:VALUE``. The value is
    a Python literal if it is one (``1e-5``, ``[64, 64]``, ``True``), else YAML (``{max_steps: 10}``, strings such
    as ``policy_kwargs:dict(freeze_dpt=True)``, which the zoo loader evaluates). YAML alone would read ``1e-5`` as a
    string."""
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY:VALUE such as learning_rate:1e-5, got {text!r}")
    try:
        return key.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key.strip(), yaml.safe_load(value)

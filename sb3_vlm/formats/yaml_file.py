"""YAML files read with a one-line error that names the file, line and column (zoo files, FTRL configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_yaml"]


def read_yaml(path: Path, what: str) -> Any:
    """The document in ``path`` (``yaml.safe_load``).

    :param what: What the file is, for the messages (``"zoo config"``, ``"FTRL config"``).
    :raises FileNotFoundError: if ``path`` is not a file.
    :raises ValueError: for text that is not UTF-8 or not YAML: ``"<path>, line L, column C: <what> is not valid YAML
        (<problem>)"`` on one line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}{where}: {what} is not valid YAML ({problem})") from None
    except RecursionError:
        raise ValueError(f"{path}: {what} is nested too deeply") from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML cannot build (an escape out of range, ...)
        raise ValueError(f"{path}: {what} is not valid YAML ({type(e).__name__}: {e})") from None

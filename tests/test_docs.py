"""The documentation site: it builds with warnings as errors, the code's citations resolve, the API reference covers
the public names, and the shell commands the docs mark as runnable run."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE_DIRS = ("sb3_vlm", "envs")
API_PACKAGES = (*CODE_DIRS, "sb3_vlm.callbacks")  # each with its own ``currentmodule`` block in docs/api.rst
MAX_MODULE_DOCSTRING_LINES = 10

# A citation names its page on the same line: ``docs/compat/ftrl.md §5.3``, ``docs/compat/ftrl.md §5.3-5.7``,
# ``docs/compat/applr.md "Reward"``; further ``§N.M`` on that line belong to the last page named before them.
PAGE = re.compile(r"docs/([\w/.-]+\.md)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?")
TITLE = re.compile(r'docs/([\w/.-]+\.md) "([^"]+)"')
# The compatibility pages mark each numbered section with a MyST target: ``(ftrl-4.3)=``.
LABEL = re.compile(r"^\((\w+)-(\d+(?:\.\d+)?)\)=$", re.MULTILINE)
HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)
# A runnable block: ```{code-block} bash, then ``:class: runnable``, a blank line and one command per line.
RUNNABLE = re.compile(r"```\{code-block\} bash\n:class: runnable\n\n(.*?)```", re.DOTALL)


def _code_lines() -> list[tuple[str, int, str]]:
    lines = []
    for package in CODE_DIRS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                lines.append((str(path.relative_to(ROOT)), number, line))
    return lines


def _citations() -> list[tuple[str, str, str]]:
    """``(where, page, section or "title")`` for every citation in the code."""
    found = []
    for where, number, line in _code_lines():
        location = f"{where}:{number}"
        pages = [(m.start(), m.group(1)) for m in PAGE.finditer(line)]
        for match in SECTION.finditer(line):
            before = [page for start, page in pages if start < match.start()]
            page = before[-1] if before else ""
            found += [(location, page, "§" + s) for s in match.groups() if s]
        found += [(location, m.group(1), f'"{m.group(2)}"') for m in TITLE.finditer(line)]
        found += [(location, page, "") for _, page in pages]
    return found


def _targets(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    sections = {"§" + m.group(2) for m in LABEL.finditer(text)}
    return sections | {f'"{m.group(1).strip()}"' for m in HEADING.finditer(text)}


def test_version() -> None:
    import sb3_vlm

    assert sb3_vlm.__version__ == importlib.metadata.version("sb3-vlm")


def test_code_citations_resolve() -> None:
    citations = _citations()
    assert citations, "no citation found: the pattern no longer matches the code"
    unresolved = []
    for where, page, target in citations:
        path = DOCS / page
        if not page or not path.is_file():
            unresolved.append(f"{where}: {target or page!r} names no existing docs page")
        elif target and target not in _targets(path):
            unresolved.append(f"{where}: {target} is not a section of docs/{page}")
    assert not unresolved, "\n".join(unresolved)


def test_module_docstrings_say_what_the_module_holds_in_a_few_lines() -> None:
    # design prose belongs to a docs page, which the docstring cites
    long = []
    for package in CODE_DIRS:
        for path in sorted((ROOT / package).rglob("*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False) or ""
            lines = len(doc.splitlines())
            if lines > MAX_MODULE_DOCSTRING_LINES:
                long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, long


def test_no_citation_of_documents_outside_the_repository() -> None:
    stale = [f"{w}:{n}" for w, n, line in _code_lines() if re.search(r"\b(ftrl|applr)_reference\b", line)]
    assert not stale, stale


@pytest.mark.parametrize("package", API_PACKAGES)
def test_api_reference_lists_every_public_name(package: str) -> None:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    # the autosummary entries after ``.. currentmodule:: <package>``, up to the next currentmodule
    block = text.split(f".. currentmodule:: {package}\n", 1)[1].split(".. currentmodule::", 1)[0]
    listed = set(re.findall(r"^   (\w+)$", block, re.MULTILINE))
    missing = set(importlib.import_module(package).__all__) - listed
    assert not missing, f"docs/api.rst does not list {sorted(missing)} of {package}.__all__"


def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    for module in ("sphinx", "myst_parser", "furo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for package in API_PACKAGES:
        for name in importlib.import_module(package).__all__:
            assert (out / "generated" / f"{package}.{name}.html").is_file(), f"no API page for {package}.{name}"


def _runnable_commands() -> list[str]:
    commands = []
    for page in sorted(DOCS.rglob("*.md")):
        for block in RUNNABLE.findall(page.read_text(encoding="utf-8")):
            commands += [line for line in block.splitlines() if line.strip()]
    return commands


def test_some_commands_are_marked_runnable() -> None:
    assert len(_runnable_commands()) >= 3


@pytest.mark.parametrize("command", _runnable_commands(), ids=lambda command: command.split(";")[0][:50])
def test_runnable_command(command: str) -> None:
    # the commands name `python` and `sb3-vlm`: those of the interpreter running the tests
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"

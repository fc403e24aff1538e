"""Sphinx configuration of the sb3-vlm documentation (``sphinx-build -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import shutil
from importlib.metadata import version as _version
from importlib.util import find_spec
from pathlib import Path

project = "sb3-vlm"
author = "sb3-vlm contributors"
release = _version("sb3-vlm")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "generated/*.md"]

# MyST: `(label)=` targets, `{code-block}` directives, `$` and `:::` not needed.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autosummary_generate = True
# The stubs are regenerated on every build: a stale one (a name since moved or removed) would be a page outside any
# toctree, which -W turns into an error.
shutil.rmtree(Path(__file__).parent / "generated", ignore_errors=True)
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Optional dependencies of some documented modules: mocked when absent, so the `docs` extra alone builds the site.
autodoc_mock_imports = [m for m in ("ray", "openai", "fastapi", "uvicorn") if find_spec(m) is None]

html_theme = "furo"
html_title = f"sb3-vlm {release}"
autodoc_inherit_docstrings = False  # third-party base-class docstrings are not ours to build

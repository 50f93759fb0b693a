"""Every ``python`` code block of the docs runs, page by page: the blocks of one page run in
page order in one namespace, as a reader runs a tutorial top to bottom.

A block that is a sketch rather than a program (a signature with placeholders) is marked
with an HTML comment ``<!-- not executed: why -->`` on the line before its fence.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from varbayes.models.errors import VarbayesError

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)


def page_blocks(page: Path) -> list[tuple[str, str]]:
    """(name, code) of every executed block of ``page``, in order."""
    return [(f"{page.relative_to(DOCS)}#{i}", m["code"])
            for i, m in enumerate(FENCE.finditer(page.read_text()))
            if "<!-- not executed" not in m["before"]]


PAGES = {str(p.relative_to(DOCS)): page_blocks(p) for p in sorted(DOCS.rglob("*.md"))}
PAGES = {k: v for k, v in PAGES.items() if v}


def run_page(blocks: list[tuple[str, str]]) -> dict:
    """Run ``blocks`` in one namespace; return it."""
    namespace: dict = {"__name__": "__docs__"}
    for name, code in blocks:
        exec(compile(code, name, "exec"), namespace)
    return namespace


def test_the_docs_have_executable_code():
    assert "architecture.md" in PAGES and "own-model.md" in PAGES


@pytest.mark.parametrize("page", list(PAGES))
def test_doc_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        run_page(PAGES[page])
    except VarbayesError as e:  # a block that reads a dataset this machine lacks
        if "not found" in str(e):
            pytest.skip(str(e))
        raise

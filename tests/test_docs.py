"""Every ``python`` code block of the docs runs (in its own namespace, in page order).

A block that is a sketch rather than a program (a signature with placeholders) is marked
with an HTML comment ``<!-- not executed: why -->`` on the line before its fence.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from varbayes.models.errors import VarbayesError

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for i, m in enumerate(FENCE.finditer(page.read_text())):
            if "<!-- not executed" not in m["before"]:
                found.append((f"{page.relative_to(DOCS)}#{i}", m["code"]))
    return found


BLOCKS = _blocks()


def test_the_docs_have_executable_code():
    assert any(name.startswith("architecture.md") for name, _ in BLOCKS)


@pytest.mark.parametrize("name, code", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_doc_block_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code, name, "exec"), {"__name__": "__docs__"})
    except VarbayesError as e:  # a block that reads a dataset this machine lacks
        if "not found" in str(e):
            pytest.skip(str(e))
        raise

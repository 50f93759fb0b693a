"""mkdocs hook: TeX math rendered to MathML at build time, so the site needs no MathJax, no
CDN and no JavaScript for its formulas (browsers render MathML Core natively).

``pymdownx.arithmatex`` (generic mode) wraps each formula as ``<span class="arithmatex">\\(
… \\)</span>`` or ``<div class="arithmatex">\\[ … \\]</div>``; this hook replaces each with
the ``<math>`` element that ``latex2mathml`` makes of it. A formula it cannot convert fails
the build, naming the page and the formula.
"""

from __future__ import annotations

import html
import re
from typing import Any

FORMULA = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)


def to_mathml(match: re.Match, where: str) -> str:
    from latex2mathml.converter import convert

    tag, body = match.group(1), html.unescape(match.group(2)).strip()
    tex = body[2:-2] if body[:2] in ("\\(", "\\[") else body
    try:
        mathml = convert(tex, display="block" if tag == "div" else "inline")
    except Exception as e:  # latex2mathml raises its own types for unknown commands
        raise ValueError(f"{where}: cannot render the formula {tex!r} to MathML ({e})") from e
    return mathml if tag == "span" else f'<div class="math">{mathml}</div>'


def on_page_content(content: str, page: Any, **_: Any) -> str:
    where = getattr(getattr(page, "file", None), "src_path", "a page")
    return FORMULA.sub(lambda m: to_mathml(m, where), content)

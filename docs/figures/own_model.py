"""Run the code of ``docs/own-model.md`` with ``docs/figures/`` as the working folder, so
that its figures land in ``docs/figures/own-model/``: ``python docs/figures/own_model.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)

if __name__ == "__main__":
    text = (HERE.parent / "own-model.md").read_text()
    os.chdir(HERE)
    namespace: dict = {"__name__": "__docs__"}
    for i, m in enumerate(FENCE.finditer(text)):
        if "<!-- not executed" not in m["before"]:
            exec(compile(m["code"], f"own-model.md#{i}", "exec"), namespace)

"""Draws packages.png for docs/architecture.md: the packages and who imports whom.

Run from the repository root: ``python docs/figures/architecture/packages.py``. The edges
come from the same import graph that ``tests/test_layout.py`` checks (every import of every
module, lazy ones included), summed per package.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
#: Rows top to bottom: (label, import prefix) per box.
ROWS = [
    [("varbayes (public API)", "varbayes"), ("cli + commands", "varbayes.inference.cli|"
                                             "varbayes.inference.commands")],
    [("inference.ising", "varbayes.inference.ising"), ("inference.vae", "varbayes.inference.vae")],
    [("vi", "varbayes.inference.vi"), ("mcmc", "varbayes.inference.mcmc"),
     ("evidence", "varbayes.inference.evidence"), ("workflow", "varbayes.inference.workflow"),
     ("data", "varbayes.inference.data"), ("backends, io", "varbayes.inference.backends|"
                                                          "varbayes.inference.io")],
    [("models.ising", "varbayes.models.ising"), ("models.vae", "varbayes.models.vae"),
     ("models.bayesian_vae", "varbayes.models.bayesian_vae"),
     ("models.ppca", "varbayes.models.ppca"), ("models.errors", "varbayes.models.errors")],
]
COLORS = ["#d9d9d9", "#fdd0a2", "#c6dbef", "#c7e9c0"]
#: Arrow colour by the importer's row, so an arrow that passes behind a box reads as its own.
ARROWS = ["#555555", "#d9730d", "#2b6cb0", "#2f855a"]


def _graph() -> dict[str, set[str]]:
    spec = importlib.util.spec_from_file_location("layout", ROOT / "tests" / "test_layout.py")
    layout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layout)
    return layout.GRAPH


def _box(module: str) -> str | None:
    """The label of the box a module belongs to (the longest matching prefix)."""
    best, label = -1, None
    for row in ROWS:
        for name, prefixes in row:
            for p in prefixes.split("|"):
                hit = module == p or module.startswith(p + ".")
                if hit and len(p) > best and not (p == "varbayes" and module != "varbayes"):
                    best, label = len(p), name
    return label


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    edges: Counter[tuple[str, str]] = Counter()
    for src, targets in _graph().items():
        for dst in targets:
            a, b = _box(src), _box(dst)
            if a and b and a != b:
                edges[(a, b)] += 1
    pos, row_of, width = {}, {}, 1.55
    fig, ax = plt.subplots(figsize=(11, 6.2))
    for r, row in enumerate(ROWS):
        y = 3 - r
        for i, (name, _) in enumerate(row):
            x = (i - (len(row) - 1) / 2) * 1.85
            pos[name], row_of[name] = (x, y), r
            ax.add_patch(FancyBboxPatch((x - width / 2, y - 0.2), width, 0.4,
                                        boxstyle="round,pad=0.02", fc=COLORS[r], ec="k",
                                        lw=0.8, zorder=2))
            ax.text(x, y, name, ha="center", va="center", fontsize=8.5, zorder=3)
    for (a, b), n in edges.items():
        (x0, y0), (x1, y1) = pos[a], pos[b]
        same_row = y0 == y1
        start = (x0 + (0.78 if x1 > x0 else -0.78), y0) if same_row else (x0, y0 - 0.2)
        end = (x1 - (0.78 if x1 > x0 else -0.78), y1) if same_row else (x1, y1 + 0.2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8,
                                     lw=0.4 + 0.15 * min(n, 10), color=ARROWS[row_of[a]],
                                     alpha=0.6, zorder=1,
                                     connectionstyle=f"arc3,rad={0.35 if same_row else 0.04}"))
    for r, text in enumerate(["the CLI and the API", "model families",
                              "generic algorithms: any model+guide pair",
                              "models: never import inference"]):
        ax.text(-5.9, 3 - r + 0.33, text, fontsize=8, style="italic", color="#333333")
    ax.set_xlim(-6.0, 6.0)
    ax.set_ylim(-0.95, 3.55)
    ax.set_axis_off()
    fig.tight_layout()
    out = Path(__file__).with_name("packages.png")
    fig.savefig(out, dpi=110)
    print(f"{sum(edges.values())} module imports between {len(pos)} packages -> {out}")


if __name__ == "__main__":
    main()

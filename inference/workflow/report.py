"""One report of an SVI-vs-NUTS comparison: tables, gate, k̂ of q, gaps, model comparison.

Pure formatting on top of :mod:`.diagnostics`: every function takes InferenceData
or pandas tables and returns Markdown text; :func:`write_report` writes ``report.md`` next
to its PNG figures and a self-contained ``report.html`` (figures embedded, no network).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from varbayes.inference.io import atomic_write_bytes
from varbayes.inference.workflow.diagnostics import Gate, QCheck, compare, gate, loo


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        if not math.isfinite(float(v)):
            return "—"
        return f"{float(v):.{digits}f}"
    return str(v)


#: Column headers that hold counts (arviz's ESS, divergences): printed as integers.
COUNT_COLUMNS = re.compile(r"ess|divergence|^n\(", re.I)


def escape(text: str) -> str:
    """``text`` with Markdown's emphasis, link and table characters escaped."""
    return re.sub(r"([*_\[\]|`])", r"\\\1", str(text))


def _cell(v: Any, digits: int, count: bool) -> str:
    if count and isinstance(v, float | np.floating) and math.isfinite(float(v)):
        v = round(float(v))
    return _fmt(v, digits).replace("|", "\\|")


def markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str], digits: int = 3
                   ) -> str:
    """A GitHub-flavoured Markdown table; floats with ``digits`` decimals, counts (columns
    named like ESS or divergences) as integers, ``|`` in a cell escaped."""
    counts = [bool(COUNT_COLUMNS.search(h)) for h in header]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v, digits, c) for v, c in zip(r, counts, strict=True))
              + " |" for r in rows]
    return "\n".join(lines)


def summary_side_by_side(fits: Mapping[str, Any], var_names: Sequence[str] | None = None
                         ) -> str:
    """``az.summary`` of several fits (name -> InferenceData) in one table, row per scalar
    (one draw has no sd: NaN, shown as —, without numpy's warnings)."""
    import warnings

    import arviz as az

    cols = ("mean", "sd", "ess_bulk", "r_hat")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tables = {name: az.summary(idata, var_names=var_names) for name, idata in fits.items()}
    index = next(iter(tables.values())).index
    header = ["variable"] + [f"{name} {c}" for name in tables for c in cols]
    rows = [[i] + [t.loc[i, c] if i in t.index else float("nan") for t in tables.values()
                   for c in cols] for i in index]
    return markdown_table(rows, header)


def gate_table(gates: Mapping[str, Gate]) -> str:
    """Gate pass/fail per fit: r̂ ≤ 1.01, bulk ESS ≥ 400, no divergences."""
    rows = [[name, "PASS" if g.passed else "FAIL", g.max_rhat, g.min_ess_bulk, g.divergences,
             ", ".join(g.failing) or "—"] for name, g in gates.items()]
    return markdown_table(rows, ["fit", "gate", "max r̂", "min bulk ESS", "divergences",
                                 "failing"], digits=3)


#: Fewest posterior draws from which arviz's PSIS-LOO runs (one draw has no tail to fit).
LOO_MIN_DRAWS = 2


def model_comparison(models: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    """PSIS-LOO per model with k̂ warnings, and ``az.compare`` tables for LOO and WAIC.

    Returns Markdown and flat metrics (``loo_<name>``, ``loo_se_<name>``, ``waic_<name>``,
    ``loo_high_k_<name>``); when a model has fewer than :data:`LOO_MIN_DRAWS` draws, a
    note instead, with ``loo_<name>`` and ``waic_<name>`` NaN.
    """
    import warnings

    import arviz as az

    draws = {name: int(i.posterior.sizes["chain"] * i.posterior.sizes["draw"])
             for name, i in models.items()}
    if min(draws.values()) < LOO_MIN_DRAWS:  # PSIS fits a tail to the largest ratios
        return (f"Not computed: PSIS-LOO needs at least {LOO_MIN_DRAWS} posterior draws per "
                f"model, got {min(draws.values())} (--chains × --samples).",
                {f"{ic}_{name}": math.nan for name in models for ic in ("loo", "waic")})
    rows, metrics, notes, reports = [], {}, [], []
    for name, idata in models.items():
        r = loo(idata)
        reports.append(r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = az.waic(idata)
        rows.append([name, r.elpd_loo, r.se, r.p_loo, float(w.elpd_waic), r.max_k, r.n_high_k])
        metrics.update({f"loo_{name}": r.elpd_loo, f"loo_se_{name}": r.se,
                        f"waic_{name}": float(w.elpd_waic), f"loo_high_k_{name}": r.n_high_k,
                        f"loo_max_k_{name}": r.max_k, f"loo_good_k_{name}": r.good_k})
        if r.warning:
            notes.append(f"* **{name}**: {r.warning}.")
    thresholds = sorted({round(r.good_k, 2) for r in reports})
    text = [markdown_table(rows, ["model", "elpd_loo", "se", "p_loo", "elpd_waic", "max k̂",
                                  "n(k̂ > good_k)"])]
    text += ["", "good_k = min(1 − 1/log10(S), 0.7) for S draws (arviz's threshold): "
             + ", ".join(f"{t:.2f}" for t in thresholds) + ".", ""]
    text += notes or ["* every Pareto k̂ ≤ good_k and arviz raised no warning: the PSIS-LOO "
                      "estimates are reliable."]
    if len(models) >= 2:
        for ic in ("loo", "waic"):
            t = compare(models, ic=ic)
            col = f"elpd_{ic}"
            rows = [[i, t.loc[i, "rank"], t.loc[i, col], t.loc[i, "elpd_diff"], t.loc[i, "se"],
                     t.loc[i, "dse"], t.loc[i, "weight"]] for i in t.index]
            text += ["", f"`az.compare(ic=\"{ic}\")`, best first:", "",
                     markdown_table(rows, ["model", "rank", col, "elpd_diff", "se", "dse",
                                           "weight"])]
    return "\n".join(text), metrics


def q_check_table(checks: Mapping[str, QCheck], labels: Sequence[Any] | None = None) -> str:
    """The PSIS k̂ of each q (Yao et al. 2018): one row per datapoint (``labels``) or one
    row for global latents, then each q's verdict."""
    first = next(iter(checks.values()))
    labels = list(labels) if labels is not None else list(range(first.khat.size))
    rows = [[lab, *[float(c.khat[i]) for c in checks.values()]] for i, lab in enumerate(labels)]
    text = [markdown_table(rows, ["datapoint", *[f"k̂ of {n}" for n in checks]], digits=2), ""]
    text += [f"* **{n}** ({c.n_draws} draws, good_k = {c.good_k:.2f}): {c.verdict}."
             for n, c in checks.items()]
    return "\n".join(text)


def gates(fits: Mapping[str, Any]) -> dict[str, Gate]:
    """:func:`.diagnostics.gate` of each fit."""
    return {name: gate(idata) for name, idata in fits.items()}


def image(path: str | os.PathLike[str], caption: str) -> str:
    """A Markdown image with a relative path (the report sits next to its figures)."""
    return f"![{escape(caption)}]({Path(path).name})\n\n*{escape(caption)}*"


def write_report(out: str | os.PathLike[str], title: str, sections: Sequence[tuple[str, str]],
                 figures: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """``report.md`` and a self-contained ``report.html`` in ``out``: a title, then
    (heading, Markdown body) per section, then each of ``figures`` (the run's other PNGs)
    that no section shows.

    The HTML has its figures embedded as data URIs and its style inline: one file that opens
    offline and can be mailed. Returns the Markdown path.
    """
    folder = Path(out)
    parts = [f"# {escape(title)}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    text = "\n".join(parts)
    shown = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))
    rest = sorted({Path(p).name for p in figures} - shown)
    if rest:
        text += "\n## All other figures\n\n" + "\n\n".join(image(folder / n, n)
                                                               for n in rest) + "\n"
    path = folder / "report.md"
    atomic_write_bytes(path, text.encode())
    atomic_write_bytes(folder / "report.html", render_html(text, folder, title).encode())
    return path


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def render_html(markdown_text: str, folder: str | os.PathLike[str], title: str) -> str:
    """A self-contained HTML page of ``markdown_text``: tables rendered, every image in
    ``folder`` it refers to embedded as a ``data:`` URI, no script and no network access."""
    import base64
    import html

    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def embed(m: re.Match) -> str:
        src = html.unescape(m.group(1))
        p = Path(folder) / src
        if "/" in src or not p.is_file():
            return m.group(0)
        data = base64.b64encode(p.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")

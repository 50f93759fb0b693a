"""``varbayes compare``: one report with the gate, tables, gaps and LOO/WAIC comparisons."""

from __future__ import annotations

import json
import re

from varbayes.inference.cli import main

TINY = ["--n-train", "100", "--n-test", "10", "--hidden", "8", "--batch-size", "50",
        "--epochs", "1", "--quiet"]


def test_compare_writes_one_report(tmp_path):
    k2, k1 = tmp_path / "k2", tmp_path / "k1"
    assert main(["vae", "train", "--latent", "2", "--out", str(k2), *TINY]) == 0
    assert main(["vae", "train", "--latent", "1", "--out", str(k1), *TINY]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(k2), "--variants", str(k1), "--ising-couplings", "0,1",
                 "--chains", "2", "--warmup", "30", "--samples", "40", "--n-data", "3",
                 "--out", str(out), "--quiet"]) == 0
    text = (out / "report.md").read_text()
    for needle in ("Diagnostics gate", "az.summary", "Amortization gap", "elpd_loo",
                   "elpd_waic", "Ising couplings", "k2", "k1", "J=1"):
        assert needle in text, needle
    for line in text.splitlines():  # every figure the report shows exists
        if line.startswith("!["):
            assert (out / line.rsplit("](", 1)[1].rstrip(")")).stat().st_size > 1000, line
    m = json.loads((out / "metrics.json").read_text())
    assert {"loo_k2", "loo_k1", "waic_k2", "ising_is_loo_J=1", "latent_gate_passed"} <= set(m)
    # J=1 predicts a held-out pixel from its neighbours better than independent pixels
    assert m["ising_is_loo_J=1"] > m["ising_is_loo_J=0"]
    assert (out / "nuts_posterior.nc").is_file() and (out / "svi_posterior.nc").is_file()
    # every figure the command wrote is in the report, not only some of them
    assert {p.name for p in out.glob("*.png")} <= set(re.findall(r"\]\(([^)]+)\)", text))
    # az.summary's ESS columns print as integers ("206", not "206.000")
    rows = [r.split("|")[1:-1] for r in text.splitlines() if r.startswith("| z[")]
    assert rows and all(re.fullmatch(r" \d+ ", r[3]) for r in rows), rows[:2]
    _report_html_in_a_browser(out, m, tmp_path)


def _report_html_in_a_browser(out, m, tmp_path):
    """report.html is one self-contained file: it loads in headless Chromium without console
    errors or network access, every image decodes, and the key numbers are on the page."""
    import os
    import shutil

    from tests.browser import check_page

    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    alone = tmp_path / "mailed"  # the HTML alone, without its PNGs beside it
    alone.mkdir()
    shutil.copy(out / "report.html", alone)
    shot = tmp_path / "report_html.png"
    seen = check_page(alone / "report.html", tmp_path, screenshot=shot)
    assert seen["errors"] == [] and seen["bad"] == [], seen
    assert seen["images"] == len(list(out.glob("*.png")))
    for key in ("loo_k2", "loo_k1"):
        assert f"{m[key]:.3f}" in seen["text"], key
    assert "Is q good enough?" in seen["text"] and "good_k" in seen["text"]
    if keep := os.environ.get("VARBAYES_KEEP_SCREENSHOT"):
        shutil.copy(shot, keep)


def test_compare_bad_input(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), "--ising-couplings", "a,b",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--ising-couplings must be comma-separated" in capsys.readouterr().err

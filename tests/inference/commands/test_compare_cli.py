"""``varbayes compare``: one report with the gate, tables, gaps and LOO/WAIC comparisons."""

from __future__ import annotations

import json
import re

import pytest

from varbayes.inference.cli import main

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow

TINY = ["--n-train", "100", "--n-test", "10", "--hidden", "8", "--batch-size", "50",
        "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Two tiny runs and one compare of them (shared by the tests of its outputs); a stale
    PNG of an earlier run sits in --out."""
    tmp_path = tmp_path_factory.mktemp("compare")
    k2, k1 = tmp_path / "k2", tmp_path / "k1"
    assert main(["vae", "train", "--latent", "2", "--out", str(k2), *TINY]) == 0
    assert main(["vae", "train", "--latent", "1", "--out", str(k1), *TINY]) == 0
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "stale_old_run.png").write_bytes(b"not this run's")
    assert main(["compare", str(k2), "--variants", str(k1), "--ising-couplings", "0,1",
                 "--chains", "2", "--warmup", "30", "--samples", "40", "--n-data", "3",
                 "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_compare_writes_one_report(compared):
    out, m = compared
    text = (out / "report.md").read_text()
    for needle in ("Diagnostics gate", "az.summary", "Amortization gap", "elpd_loo",
                   "elpd_waic", "Ising couplings", "k2", "k1", "J=1"):
        assert needle in text, needle
    links = re.findall(r"\]\(([^)]+)\)", text)
    for link in links:  # every figure the report shows exists
        assert (out / link).stat().st_size > 1000, link
    # every figure this run wrote is in the report, and nothing else
    assert {p.name for p in out.glob("*.png")} - set(links) == {"stale_old_run.png"}
    assert {"loo_k2", "loo_k1", "waic_k2", "ising_is_loo_J=1", "latent_gate_passed"} <= set(m)
    # J=1 predicts a held-out pixel from its neighbours better than independent pixels
    assert m["ising_is_loo_J=1"] > m["ising_is_loo_J=0"]
    assert (out / "nuts_posterior.nc").is_file() and (out / "svi_posterior.nc").is_file()
    assert (m["chain_method"], m["devices"]) == ("sequential", 1)  # this process: 1 device
    # az.summary's ESS columns print as integers ("206", not "206.000")
    rows = [r.split("|")[1:-1] for r in text.splitlines() if r.startswith("| z[")]
    assert rows and all(re.fullmatch(r" \d+ ", r[3]) for r in rows), rows[:2]


def test_report_html_in_a_browser(compared, tmp_path):
    """report.html is one self-contained file: it loads in headless Chromium without console
    errors or network access, every image decodes, and the key numbers are on the page."""
    import os
    import shutil

    from tests.browser import check_page

    out, m = compared
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "<script" not in html
    alone = tmp_path / "mailed"  # the HTML alone, without its PNGs beside it
    alone.mkdir()
    shutil.copy(out / "report.html", alone)
    shot = tmp_path / "report_html.png"
    seen = check_page(alone / "report.html", tmp_path, screenshot=shot)
    assert seen["errors"] == [] and seen["bad"] == [], seen
    assert seen["images"] == len(list(out.glob("*.png"))) - 1  # all but the stale one
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

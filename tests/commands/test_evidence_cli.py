"""``varbayes evidence``: tiny runs in both backends, the backends agree, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.cli import main

TINY = ["--n-train", "200", "--n-test", "40", "--hidden", "16", "--batch-size", "50",
        "--latent", "2", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same architecture and seed trained one epoch in each backend."""
    root = tmp_path_factory.mktemp("evidence")
    out = {}
    for backend in ("numpyro", "pyro"):
        out[backend] = root / backend
        assert main(["vae", "train", "--backend", backend, "--epochs", "1", "--out",
                     str(out[backend]), *TINY]) == 0
    return out


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_evidence_writes_metrics_and_figure(runs, backend, tmp_path):
    out = tmp_path / "ev"
    assert main(["evidence", str(runs[backend]), "--k", "200", "--n-data", "30", "--quiet",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("elbo", "elbo_stderr", "elbo_seconds", "is", "is_stderr", "is_seconds"):
        assert np.isfinite(m[key]), key
    assert m["n_data"] == 30 and m["elbo"] < m["is"]
    assert {"is_k1", "is_k10", "is_k100"} <= set(m)  # nested-subset estimates for the curve
    assert (out / "evidence_vs_k.png").stat().st_size > 1000


def test_backends_agree_on_the_same_weights(runs):
    """Copy the NumPyro run's weights into a Pyro VAE: the IS estimates agree."""
    from inference import evidence
    from inference.commands.evidence import vae_batches
    from inference.commands.vae import load_run
    from models.vae import pyro_model

    run = load_run(runs["numpyro"])
    twin = run._replace(mod=pyro_model, vae=pyro_model.build(run.vae.config,
                                                             run.mod.weights(run.vae)),
                        header={**run.header, "backend": "pyro"})
    est = {}
    for r, backend in ((run, "numpyro"), (twin, "pyro")):
        est[backend] = evidence.importance_sampling(
            r.mod.model, r.mod.guide, vae_batches(r, 40, 20), 2000, backend=backend,
            diagnostics=False)
    a, b = est["numpyro"], est["pyro"]
    assert abs(a.log_px.mean() - b.log_px.mean()) < 0.02
    assert abs(a.elbo.mean() - b.elbo.mean()) < 4 * np.hypot(a.elbo_stderr, b.elbo_stderr).mean()


@pytest.mark.parametrize("argv, match", [
    (["--k", "0"], "--k must be >= 1, got 0"),
    (["--estimators", "is,magic"], "unknown estimator"),
    (["--n-data", "0"], "--n-data must be >= 1"),
])
def test_bad_input_one_line(runs, argv, match, tmp_path, capsys):
    capsys.readouterr()
    assert main(["evidence", str(runs["numpyro"]), "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


def test_run_without_checkpoint(tmp_path, capsys):
    assert main(["evidence", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err


def test_quadrature_agrees_with_importance_sampling(runs, tmp_path):
    out = tmp_path / "q"
    assert main(["evidence", str(runs["pyro"]), "--estimators", "elbo,is,quadrature", "--k",
                 "2000", "--n-data", "20", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["elbo"] < m["quadrature"] and m["quadrature_refinement_max"] < 1e-3
    assert abs(m["is"] - m["quadrature"]) < 0.05


def test_quadrature_refuses_large_latents(tmp_path, capsys):
    run = tmp_path / "k3"
    assert main(["vae", "train", "--epochs", "1", "--out", str(run), *TINY[:-3], "--latent",
                 "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evidence", str(run), "--estimators", "quadrature", "--k", "2",
                 "--out", str(tmp_path / "o")]) == 2
    assert "quadrature needs latent size <= 2, but this run has 3" in capsys.readouterr().err

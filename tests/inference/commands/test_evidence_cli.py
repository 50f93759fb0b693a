"""``varbayes evidence``: tiny runs in both backends, the backends agree, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference.cli import main

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow

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
    from varbayes.inference.evidence import importance as evidence
    from varbayes.inference.vae.run import heldout_arrays, load_run, run_batches
    from varbayes.models.vae import pyro_model

    run = load_run(runs["numpyro"])
    twin = run._replace(mod=pyro_model, vae=pyro_model.build(run.vae.config,
                                                             run.mod.weights(run.vae)),
                        header={**run.header, "backend": "pyro"})
    est = {}
    for r, backend in ((run, "numpyro"), (twin, "pyro")):
        est[backend] = evidence.importance_sampling(
            r.mod.model, r.mod.guide, run_batches(r.vae, backend, *heldout_arrays(r, 40), 20),
            2000, backend=backend,
            diagnostics=False)
    a, b = est["numpyro"], est["pyro"]
    assert abs(a.log_px.mean() - b.log_px.mean()) < 0.02
    assert abs(a.elbo.mean() - b.elbo.mean()) < 4 * np.hypot(a.elbo_stderr, b.elbo_stderr).mean()


@pytest.mark.parametrize("argv, match", [
    (["--k", "0"], "--k must be >= 1, got 0"),
    (["--estimators", "is,magic"], "unknown estimator"),
    (["--n-data", "0"], "--n-data must be >= 1"),
    (["--chunk", "0"], "--chunk must be >= 1, got 0"),
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


def test_is_ais_hmc_and_quadrature_agree_on_a_latent2_vae(runs, tmp_path):
    """Issue 6 item 7: on a trained latent-2 VAE, IS (K=5000), AIS and quadrature agree
    within 0.05 nats per datapoint on average; the ELBO is below all of them."""
    out = tmp_path / "all"
    assert main(["evidence", str(runs["numpyro"]), "--estimators", "elbo,is,ais,hmc,quadrature",
                 "--k", "5000", "--ais-steps", "10,200", "--ais-chains", "8", "--hmc-samples",
                 "400", "--hmc-warmup", "100", "--n-data", "20", "--quiet", "--out",
                 str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for name in ("is", "ais", "hmc"):
        assert abs(m[name] - m["quadrature"]) < 0.05, (name, m[name], m["quadrature"])
        assert m["elbo"] < m[name]
        assert np.isfinite(m[f"{name}_stderr"]) and m[f"{name}_seconds"] > 0
    assert m["ais_t10"] < m["ais_t200"] + 0.02 and m["ais_steps"] == 200
    assert 0.4 < m["ais_accept_mean"] < 0.95
    assert (out / "ais_vs_steps.png").stat().st_size > 1000


def test_ais_on_a_pyro_run(runs, tmp_path):
    out = tmp_path / "p"
    assert main(["evidence", str(runs["pyro"]), "--estimators", "is,ais", "--k", "500",
                 "--ais-steps", "20", "--ais-chains", "4", "--ais-init", "guide",
                 "--schedule", "linear", "--n-data", "6", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert abs(m["ais"] - m["is"]) < 0.1 and m["ais_init"] == "guide"


@pytest.mark.parametrize("argv, match", [
    (["--estimators", "ais", "--ais-steps", "0"], "--ais-steps must be integers >= 1"),
    (["--estimators", "ais", "--ais-steps", "ten"], "--ais-steps must be comma-separated"),
    (["--estimators", "ais", "--ais-chains", "0"], "--ais-chains must be >= 1, got 0"),
    (["--estimators", "ais", "--schedule", "cosine"], "--schedule must be one of linear"),
    (["--estimators", "ais", "--ais-init", "x"], "--ais-init must be one of prior, guide"),
    (["--estimators", "hmc", "--hmc-samples", "3"], "hmc needs n_samples >= 4 x chains"),
])
def test_bad_ais_and_hmc_options(argv, match, tmp_path, capsys):
    """Checked before the run is loaded: an empty folder is enough."""
    capsys.readouterr()
    assert main(["evidence", str(tmp_path), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


def test_evidence_on_a_bayesian_run_averages_over_theta(tmp_path):
    """θ ~ q(θ): each estimator gives log E_q(θ) p(x|θ) (log-mean-exp over θ draws) and
    E_q(θ) log p(x|θ) (``_average``); Jensen orders them, and the ELBO sits below both."""
    run = tmp_path / "bayes"
    assert main(["vae", "train", "--bayesian", "--init-sigma", "0.05", "--latent", "2",
                 "--hidden", "16", "--n-train", "200", "--n-test", "12", "--epochs", "3",
                 "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "ev"
    assert main(["evidence", str(run), "--estimators", "elbo,is,quadrature", "--k", "300",
                 "--n-theta", "4", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["bayesian"] is True and m["n_theta"] == 4 and m["n_data"] == 12
    assert m["quadrature"] >= m["quadrature_average"] and m["is"] >= m["is_average"]
    assert m["quadrature"] - m["quadrature_average"] > 1e-3  # the θ draws differ
    assert abs(m["is_average"] - m["quadrature_average"]) < 0.1
    assert abs(m["is"] - m["quadrature"]) < 0.1
    assert m["elbo"] < m["quadrature_average"]
    plain = tmp_path / "plain"
    assert main(["vae", "train", "--latent", "2", "--hidden", "16", "--n-train", "200",
                 "--n-test", "12", "--epochs", "1", "--out", str(plain), "--quiet"]) == 0
    assert main(["evidence", str(plain), "--estimators", "is", "--k", "10", "--n-theta", "4",
                 "--out", str(tmp_path / "ev2"), "--quiet"]) == 0
    assert "bayesian" not in json.loads((tmp_path / "ev2" / "metrics.json").read_text())

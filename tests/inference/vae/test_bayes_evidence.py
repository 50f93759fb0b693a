"""bayesian_log_evidence: IS over z matches quadrature; Jensen ordering; MAP runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp

from varbayes.inference.cli import main
from varbayes.inference.evidence.importance import importance_sampling
from varbayes.inference.vae.bayes_evidence import bayesian_log_evidence, joint_ess
from varbayes.inference.vae.run import load_run, run_batches
from varbayes.models.errors import VarbayesError

TINY = ["--n-train", "100", "--n-test", "20", "--hidden", "8", "--batch-size", "50",
        "--latent", "2", "--epochs", "3", "--backend", "pyro", "--no-jit", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bev")
    out = {"map": base / "map", "bayes": base / "bayes"}
    assert main(["vae", "train", "--out", str(out["map"]), *TINY]) == 0
    assert main(["vae", "train", "--bayesian", "--init-sigma", "0.05",
                 "--out", str(out["bayes"]), *TINY]) == 0
    return out


def _quadrature(vmod, vae, x, n=301, lim=7.0):
    """log p(x) = log ∫ p(x|z) p(z) dz on a 2-D grid (the latent is 2-D), (N,)."""
    g = np.linspace(-lim, lim, n)
    z1, z2 = np.meshgrid(g, g)
    z = np.stack([z1.ravel(), z2.ravel()], -1).astype(np.float32)  # (G, 2)
    zz = np.broadcast_to(z[:, None, :], (len(z), len(x), 2)).copy()
    ll = vmod.log_likelihood(vae, x, zz).sum(-1)  # (G, N)
    lp = -0.5 * (z**2).sum(-1) - np.log(2 * np.pi)
    return logsumexp(ll + lp[:, None], axis=0) + 2 * np.log(g[1] - g[0])


@pytest.mark.slow
def test_is_over_z_matches_quadrature(runs):
    run = load_run(runs["map"])
    x = run.data.x_test[:10]
    exact = _quadrature(run.mod, run.vae, x)
    est = importance_sampling(run.mod.model, run.mod.guide,
                              run_batches(run.vae, "pyro", x, None, 500), 4000,
                              backend="pyro", seed=0).log_px
    assert np.abs(est - exact).mean() < 0.05, (est - exact)
    e = bayesian_log_evidence(runs["map"], x, k=4000, n_theta=7, seed=0)
    assert e.n_theta == 1 and not e.bayesian
    np.testing.assert_array_equal(e.predictive, e.average)  # one θ: both are IS of log p(x)
    assert np.abs(e.predictive - exact).mean() < 0.05


def test_bayesian_run_predictive_and_average(runs):
    run = load_run(runs["bayes"])
    x = run.data.x_test
    e = bayesian_log_evidence(runs["bayes"], x, k=200, n_theta=8, seed=1)
    assert e.bayesian and e.per_theta.shape == (8, len(x))
    # log of the mean over (θ, z) ≥ mean over θ of the log of the mean over z (Jensen,
    # exact for the same weights)
    assert np.all(e.predictive >= e.average - 1e-9)
    assert np.all(np.isfinite(e.predictive)) and np.all(e.ess >= 1)
    assert e.per_theta.std(0).mean() > 0  # different θ draws give different scores
    np.testing.assert_allclose(e.average, e.per_theta.mean(0))


@pytest.mark.slow
def test_the_cli_reports_this_function(runs, tmp_path):
    """varbayes evidence on a Bayesian run is bayesian_log_evidence: the same numbers."""
    import json

    out = tmp_path / "ev"
    assert main(["evidence", str(runs["bayes"]), "--estimators", "elbo,is,quadrature",
                 "--k", "50", "--n-data", "8", "--n-theta", "3", "--seed", "4",
                 "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    run = load_run(runs["bayes"])
    x = run.data.x_test[:8]
    e = bayesian_log_evidence(run, x, estimators=("elbo", "is", "quadrature"), k=50,
                              n_theta=3, seed=4)
    assert m["n_theta"] == e.n_theta == 3
    np.testing.assert_allclose(m["is"], e.predictive.mean(), rtol=1e-12)
    np.testing.assert_allclose(m["is_average"], e.average.mean(), rtol=1e-12)
    np.testing.assert_allclose(m["is_ess_mean"], e.ess.mean(), rtol=1e-12)
    np.testing.assert_allclose(m["quadrature"], e.estimates["quadrature"].log_px.mean(),
                               rtol=1e-12)
    np.testing.assert_allclose(m["quadrature_average"], e.averages["quadrature"].mean(),
                               rtol=1e-12)
    np.testing.assert_allclose(m["elbo"], e.estimates["is"].elbo.mean(), rtol=1e-12)
    # quadrature per θ is exact, so Jensen over θ holds to rounding
    assert np.all(e.estimates["quadrature"].log_px >= e.averages["quadrature"] - 1e-9)


def test_joint_ess_pools_the_per_theta_weights():
    """The pooled ESS from per-θ (log mean, ESS) pairs equals the ESS of all S·K weights."""
    lw = np.random.default_rng(0).normal(0, 2, size=(5, 30, 4))  # (S, K, N) log weights
    log_px = logsumexp(lw, axis=1) - np.log(30)
    w = np.exp(lw)
    ess = w.sum(1) ** 2 / (w**2).sum(1)
    flat = w.reshape(-1, 4)
    np.testing.assert_allclose(joint_ess(log_px, ess, 30),
                               flat.sum(0) ** 2 / (flat**2).sum(0), rtol=1e-10)


def test_bad_k(runs):
    with pytest.raises(VarbayesError, match="--k must be >= 1"):
        bayesian_log_evidence(runs["map"], np.zeros((1, 64), np.float32), k=0)
    with pytest.raises(VarbayesError, match="--n-theta must be >= 1"):
        bayesian_log_evidence(runs["map"], np.zeros((1, 64), np.float32), n_theta=0)

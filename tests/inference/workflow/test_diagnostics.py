"""arviz workflow: the gate, exact-LOO oracle, mean-field variance underestimation, plots."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from varbayes.inference.mcmc import nuts as mcmc
from varbayes.inference.workflow import diagnostics
from varbayes.models.errors import VarbayesError

RNG = np.random.default_rng(0)
Y = RNG.normal(1.0, 1.0, size=25)
S0, S = 2.0, 1.0  # prior sd of mu, noise sd


def _posterior(y):
    prec = 1 / S0**2 + len(y) / S**2
    return (y.sum() / S**2) / prec, 1 / prec


def _exact_draws(n_chain=4, n_draw=1000, y=Y, shift=0.0):
    m, v = _posterior(y)
    mu = RNG.normal(m, np.sqrt(v), size=(n_chain, n_draw)) + shift
    ll = stats.norm.logpdf(y[None, None, :], mu[..., None], S)
    return diagnostics.from_draws({"mu": mu}, {"y": ll}, {"y": y})


def test_gate_passes_iid_draws_and_fails_stuck_chains():
    g = diagnostics.gate(_exact_draws())
    assert g.passed and g.max_rhat < 1.01 and g.min_ess_bulk > 3000 and g.failing == ()
    bad = _exact_draws()
    bad.posterior["mu"].values[0] += 1.0  # one chain elsewhere
    g = diagnostics.gate(bad)
    assert not g.passed and g.failing == ("mu",) and g.max_rhat > 1.1


def test_psis_loo_matches_exact_leave_one_out():
    exact = 0.0
    for i in range(len(Y)):
        m, v = _posterior(np.delete(Y, i))
        exact += stats.norm.logpdf(Y[i], m, np.sqrt(S**2 + v))
    rep = diagnostics.loo(_exact_draws(n_draw=2000))
    assert rep.elpd_loo == pytest.approx(exact, abs=0.05)
    assert rep.n_high_k == 0 and rep.warning == ""


def test_compare_ranks_the_true_model_first_and_flags_bad_k():
    good = _exact_draws()
    wrong = _exact_draws(shift=1.5)  # a model whose posterior sits in the wrong place
    table = diagnostics.compare({"good": good, "wrong": wrong})
    assert list(table.index) == ["good", "wrong"]
    assert diagnostics.compare({"good": good, "wrong": wrong}, ic="waic").index[0] == "good"
    outlier = _exact_draws(y=np.append(Y, 25.0))
    rep = diagnostics.loo(outlier)
    assert rep.n_high_k >= 1 and "Pareto" in rep.warning
    with pytest.raises(VarbayesError, match="at least two"):
        diagnostics.compare({"good": good})


@pytest.mark.slow
def test_mean_field_underestimates_correlated_variance():
    """KL(q||p) with q fully factorized: var_i = 1/Λ_ii = 1 - ρ² for unit variances."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    rho = 0.8
    cov = jnp.array([[1.0, rho], [rho, 1.0]])

    def model():
        numpyro.sample("z", dist.MultivariateNormal(jnp.zeros(2), covariance_matrix=cov))

    guide = AutoNormal(model)
    svi = SVI(model, guide, numpyro.optim.Adam(0.02), Trace_ELBO(num_particles=8))
    res = svi.run(jax.random.key(0), 3000, progress_bar=False)
    q = guide.sample_posterior(jax.random.key(1), res.params, sample_shape=(4, 1000))
    svi_idata = diagnostics.from_draws({"z": np.asarray(q["z"])})
    nuts_idata = mcmc.nuts(model, num_chains=2, num_warmup=500, num_samples=1000,
                           progress_bar=False)
    svi_sd = diagnostics.summary(svi_idata)["sd"].to_numpy()
    nuts_sd = diagnostics.summary(nuts_idata)["sd"].to_numpy()
    np.testing.assert_allclose(svi_sd, np.sqrt(1 - rho**2), atol=0.05)
    np.testing.assert_allclose(nuts_sd, 1.0, atol=0.1)
    assert diagnostics.gate(nuts_idata, ess_min=300).divergences == 0


def test_plots_are_written(tmp_path):
    idata = _exact_draws(n_draw=200)
    paths = diagnostics.plot_diagnostics(idata, tmp_path, prefix="svi_")
    assert sorted(p.name for p in paths) == ["svi_forest.png", "svi_rank.png", "svi_trace.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    two = diagnostics.from_draws({"z": RNG.normal(size=(2, 100, 2))})
    names = [p.name for p in diagnostics.plot_diagnostics(two, tmp_path)]
    assert "pair.png" in names


def test_loo_needs_log_likelihood_and_draws_need_chains():
    with pytest.raises(VarbayesError, match="no log_likelihood group"):
        diagnostics.loo(diagnostics.from_draws({"mu": np.zeros((2, 10))}))
    with pytest.raises(VarbayesError, match=r"must be \(chain, draw, \.\.\.\)"):
        diagnostics.from_draws({"mu": np.zeros(10)})

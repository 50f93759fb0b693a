"""Ising Gibbs draws as InferenceData match exact marginals; LOO over couplings."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from varbayes.inference.ising import mcmc as ising_mcmc
from varbayes.inference.workflow.diagnostics import compare, gate
from varbayes.models.errors import VarbayesError
from varbayes.models.ising import LocalField, Noise, Posterior, corrupt, exact, make_couplings


def _posterior(seed=1, J=0.4):
    rng = np.random.default_rng(seed)
    field = LocalField(0.8 * rng.normal(size=(4, 4)), 0.8 * rng.normal(size=(4, 4)))
    return Posterior(make_couplings(J, (4, 4)), field)


@pytest.mark.slow
def test_marginals_within_monte_carlo_error_of_exact():
    post = _posterior()
    idata = ising_mcmc.sample(jax.random.key(0), post, num_samples=1000, burn_in=100,
                              num_chains=4)
    assert idata.posterior["z"].shape == (4, 1000, 4, 4)
    assert idata.log_likelihood["x"].shape == (4, 1000, 4, 4)
    mean, se = ising_mcmc.marginal_means(idata)
    truth = 2 * exact.brute_force(post).marginals - 1
    z = (mean - truth) / se
    assert np.all(np.abs(z) < 4.5), z  # 16 sites
    assert 0.05 < np.mean(z**2) < 4.0  # the standard errors are the right size, too
    g = gate(idata, ess_min=400)
    assert g.max_rhat < 1.02 and g.divergences == 0


@pytest.mark.slow
def test_loo_prefers_the_true_coupling_and_checks_input():
    rng = np.random.default_rng(0)
    clean = np.ones((12, 12), dtype=np.int8)
    clean[:, 6:] = -1
    noise = Noise("flip", 0.2)
    x = corrupt(clean, noise, rng)
    models = ising_mcmc.compare_couplings(jax.random.key(1), x, noise,
                                          {"J=0": 0.0, "J=0.8": 0.8},
                                          num_samples=300, burn_in=50, num_chains=2)
    table = compare(models, ic="waic")
    assert table.index[0] == "J=0.8"  # neighbours predict a held-out pixel
    loo = {k: ising_mcmc.is_loo(v) for k, v in models.items()}
    assert loo["J=0.8"][0] > loo["J=0"][0] + 2 * loo["J=0.8"][1]
    # with J = 0 the pixels are independent, so p(x_ij | x_-ij) = p(x_ij) = 1/2 exactly
    # (per pixel up to Monte-Carlo error: 600 draws give ~0.05 nats)
    np.testing.assert_allclose(loo["J=0"][2], np.log(0.5), atol=0.25)
    assert abs(loo["J=0"][2].mean() - np.log(0.5)) < 0.02
    assert loo["J=0"][2].shape == (12, 12)
    with pytest.raises(VarbayesError, match="num_samples"):
        ising_mcmc.sample(jax.random.key(0), _posterior(), num_samples=0)

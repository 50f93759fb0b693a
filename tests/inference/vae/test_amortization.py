"""The amortization gaps against closed forms; NUTS latent draws against the grid."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from varbayes.inference.vae import amortization as am
from varbayes.inference.vae.latent_posterior import sample_latent
from varbayes.inference.vae.run import Run, numpyro_twin

# A correlated Gaussian "posterior" per datapoint: log p(x, z) = C + log N(z; m, Σ).
M_TRUE = np.array([[0.5, -1.0], [2.0, 0.3]])
RHO, SD, C = 0.8, np.array([1.0, 0.5]), -3.0
COV = np.outer(SD, SD) * np.array([[1, RHO], [RHO, 1]])
PREC = np.linalg.inv(COV)


def gaussian_log_joint(z):
    d = z - jnp.asarray(M_TRUE, jnp.float32)
    quad = jnp.einsum("mi,ij,mj->m", d, jnp.asarray(PREC, jnp.float32), d)
    return C - 0.5 * quad - 0.5 * math.log((2 * math.pi) ** 2 * np.linalg.det(COV))


@pytest.mark.slow
def test_gaps_on_a_correlated_gaussian_match_the_closed_form():
    start = am.Gaussians(np.zeros((2, 2)), np.ones((2, 2)))
    rep, grid = am.gaps(gaussian_log_joint, start, steps=1500)
    np.testing.assert_allclose(rep.log_px, C, atol=1e-4)
    # the best mean-field Gaussian: mean m, variances 1/Λ_ii (Bishop 2006, §10.1.2)
    np.testing.assert_allclose(rep.optimal.loc, M_TRUE, atol=2e-3)
    np.testing.assert_allclose(rep.optimal.scale, np.tile(1 / np.sqrt(np.diag(PREC)), (2, 1)),
                               rtol=2e-3)
    kl_star = 0.5 * (np.log(np.diag(PREC)).sum() - np.log(np.linalg.det(PREC)))
    np.testing.assert_allclose(rep.approximation_gap, kl_star, atol=1e-3)
    # ELBO(N(0, I)) = C - KL(N(0, I) || N(m, Σ)), in closed form
    kl0 = 0.5 * (np.trace(PREC) + np.einsum("mi,ij,mj->m", M_TRUE, PREC, M_TRUE) - 2
                 + np.log(np.linalg.det(COV)))
    np.testing.assert_allclose(rep.elbo_amortized, C - kl0, atol=1e-4)
    np.testing.assert_allclose(rep.inference_gap, rep.approximation_gap + rep.amortization_gap)
    np.testing.assert_allclose(grid.mean, M_TRUE, atol=1e-3)  # the grid sees the full p(z|x)
    np.testing.assert_allclose(grid.sd, np.tile(SD, (2, 1)), rtol=2e-3)


@pytest.mark.slow
def test_monte_carlo_route_for_larger_latents():
    m = np.array([[0.3, -0.2, 1.0]])

    def lj(z):  # log p(x, z) = C + log N(z; m, 0.25 I), latent size 3
        return C + jnp.sum(-2 * (z - m) ** 2 + math.log(2) - 0.5 * math.log(2 * math.pi), -1)

    rep, grid = am.gaps(lj, am.Gaussians(np.zeros((1, 3)), np.ones((1, 3))), steps=1500,
                        n_elbo=4000, k_is=2000)
    assert grid is None and rep.log_px_method == "is"
    np.testing.assert_allclose(rep.log_px, C, atol=0.01)  # q* ≈ p: near-constant weights
    np.testing.assert_allclose(rep.optimal.scale, 0.5, rtol=0.05)  # stochastic optimizer
    assert rep.elbo_amortized_se[0] > 0
    kl0 = 0.5 * (3 * 4 + 4 * np.sum(m**2) - 3 + 3 * np.log(0.25))
    assert abs(rep.elbo_amortized[0] - (C - kl0)) < 4 * rep.elbo_amortized_se[0]


@pytest.fixture(scope="module")
def vae_run():
    """An untrained tiny VAE (random weights) with 2 binary datapoints: a skewed p(z|x)."""
    from varbayes.models.vae import numpyro_model
    from varbayes.models.vae.config import VAEConfig

    cfg = VAEConfig(x_dim=12, z_dim=2, hidden=(8,), init_std=0.8)
    vae = numpyro_model.build(cfg, seed=3)
    x = (np.random.default_rng(0).random((2, 12)) < 0.5).astype(np.float32)
    return Run(numpyro_model, vae, {"backend": "numpyro"}, None, None), x


@pytest.mark.slow
def test_nuts_latent_draws_match_the_grid_posterior(vae_run):
    run, x = vae_run
    lj = am.vae_log_joint(numpyro_twin(run), x)
    q = am.Gaussians(*(a.astype(np.float64) for a in run.mod.encode(run.vae, x)))
    rep, grid = am.gaps(lj, q, steps=500)
    assert np.all(rep.amortization_gap > -1e-4) and np.all(rep.approximation_gap > -1e-4)
    idata = sample_latent(run, x, num_chains=2, num_warmup=200, num_samples=300,
                          progress_bar=False, seed=1)
    z = am.latent_draws(idata)
    assert z.shape == (600, 2, 2)
    assert idata.log_likelihood["x"].shape == (2, 300, 2)
    import arviz as az

    ess = np.asarray(az.ess(idata, var_names=["z"])["z"].values)
    err = (z.mean(0) - grid.mean) / (grid.sd / np.sqrt(ess))
    assert np.all(np.abs(err) < 4.5), err
    np.testing.assert_allclose(z.std(0), grid.sd, rtol=0.15)
    ljd = np.asarray(jax.vmap(lj)(z.astype(np.float32)), np.float64)
    kl_pq = am.kl_p_q(ljd, z, rep.amortized, rep.log_px)
    kl_pq_star = am.kl_p_q(ljd, z, rep.optimal, rep.log_px)
    assert np.all(kl_pq > -0.05) and np.all(kl_pq_star > -0.05)
    # the grid's evidence agrees with the adaptive quadrature of evidence.quadrature
    np.testing.assert_allclose(grid.log_px, rep.log_px, atol=1e-3)

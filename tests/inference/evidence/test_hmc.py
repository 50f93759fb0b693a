"""The AEVB appendix-D estimator against PPCA's closed form."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.evidence import hmc as he
from varbayes.models.errors import VarbayesError
from varbayes.models.ppca import exact_log_evidence, random_ppca, simulate


@pytest.mark.slow
def test_gaussian_fit_logpdf_is_the_fitted_normal():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    fit = rng.normal(size=(50, 3, 2)) @ np.array([[1.0, 0.5], [0.0, 2.0]])
    z = rng.normal(size=(7, 3, 2))
    got = np.asarray(he.gaussian_fit_logpdf(fit, z))
    for m in range(3):
        ref = multivariate_normal(fit[:, m].mean(0), np.cov(fit[:, m].T) + 1e-6 * np.eye(2))
        np.testing.assert_allclose(got[:, m], ref.logpdf(z[:, m]), rtol=1e-4)


@pytest.mark.slow
def test_matches_closed_form_in_two_dimensions():
    import jax.numpy as jnp

    from varbayes.models.ppca import numpyro_model as m

    p = random_ppca(D=6, K=2, sigma=0.5, seed=0, guide_scale=1.5)
    x, _ = simulate(p, 16, seed=1)
    res = he.hmc_evidence(m.model, m.guide, [((p, jnp.asarray(x, jnp.float32)), {})],
                          he.HMCEvidenceOptions(n_samples=800, n_warmup=100))
    err = res.log_px - exact_log_evidence(p, x)
    assert abs(err.mean()) < 0.05 and np.abs(err).max() < 0.2
    assert 0.4 < res.accept < 0.95


@pytest.mark.parametrize("bad, match", [({"chains": 0}, "chains >= 1"),
                                        ({"n_samples": 3}, "n_samples >= 4 x chains"),
                                        ({"n_leapfrog": 0}, "n_leapfrog >= 1"),
                                        ({"init_draws": 0}, "init_draws >= 1")])
def test_bad_options(bad, match):
    with pytest.raises(VarbayesError, match=match):
        he.check_options(he.HMCEvidenceOptions()._replace(**bad))


@pytest.mark.slow
def test_each_chain_starts_at_the_best_of_its_guide_draws():
    """best_starts against brute force: every candidate drawn, the argmax per chain and
    datapoint by the log joint (here peaked at z = 1, with a NaN that must never win)."""
    import jax
    import jax.numpy as jnp

    def sample(k, c):
        return 3.0 * jax.random.normal(k, (c, 4, 2))

    def log_joint(z):
        lj = -((z - 1.0) ** 2).sum(-1)
        return jnp.where(z[..., 0] > 5.0, jnp.nan, lj)

    key = jax.random.key(3)
    got = np.asarray(he.best_starts(key, sample, log_joint, 2, 50))
    k0, rest = jax.random.split(key)
    cands = np.stack([sample(k, 2) for k in [k0, *jax.random.split(rest, 49)]])  # (n,C,M,d)
    lj = np.nan_to_num(np.asarray(log_joint(cands)), nan=-np.inf)
    want = np.take_along_axis(cands, lj.argmax(0)[None, ..., None], 0)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.abs(got - 1).max() < np.abs(cands[0] - 1).max()  # better than one draw
    np.testing.assert_allclose(he.best_starts(key, sample, log_joint, 2, 1), sample(k0, 2),
                               rtol=1e-6)


def test_pyro_models_are_refused_with_the_fix():
    """One clear line, not a JAX trace of a torch model."""
    from varbayes.models.ppca import pyro_model as m

    with pytest.raises(VarbayesError, match=r"NumPyro models only.*twin"):
        he.hmc_evidence(m.model, m.guide, [], backend="pyro")
    with pytest.raises(VarbayesError, match="backend must be one of"):
        he.hmc_evidence(m.model, m.guide, [], backend="stan")



def test_both_halves_of_the_draws_hold_every_chain():
    """Two chains parked at different places: the Gaussian that scores the held-out half
    must be fitted to both, or q(z) is tiny there and log p(x) comes out huge."""
    import jax.numpy as jnp

    from varbayes.inference.evidence.hmc import split_draws

    S, C, M, d = 6, 2, 3, 2
    zs = jnp.broadcast_to(jnp.arange(C, dtype=jnp.float32)[None, :, None, None] * 10.0,
                          (S, C, M, d)) + jnp.arange(S, dtype=jnp.float32)[:, None, None, None]
    fit, held = split_draws(zs)
    assert fit.shape == held.shape == (S // 2 * C, M, d)
    for half in (fit, held):
        assert set(np.unique(np.asarray(half) // 10)) == {0.0, 1.0}
    np.testing.assert_array_equal(np.sort(np.concatenate([fit, held]).ravel()),
                                  np.sort(np.asarray(zs).ravel()))

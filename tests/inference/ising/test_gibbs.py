"""Ising Gibbs: marginals within Monte-Carlo error of exact ones; ICM is a local MAP."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from varbayes.inference.ising import gibbs
from varbayes.models.errors import VarbayesError
from varbayes.models.ising import (
    LocalField,
    Noise,
    Posterior,
    corrupt,
    exact,
    log_joint,
    make_couplings,
    make_posterior,
    neighbor_sum,
    pixel_error,
)


def small_posterior(seed=0, J=0.4):
    rng = np.random.default_rng(seed)
    field = LocalField(0.8 * rng.normal(size=(4, 4)), 0.8 * rng.normal(size=(4, 4)))
    return Posterior(make_couplings(J, (4, 4)), field)


@pytest.mark.slow
@pytest.mark.parametrize("J", [0.2, 0.44])
def test_gibbs_marginals_within_monte_carlo_error_of_exact(J):
    post = small_posterior(1, J)
    res = gibbs.sample(jax.random.key(0), post, num_samples=400, burn_in=100, num_chains=64)
    truth = 2 * exact.transfer_matrix(post).marginals - 1
    z = (res.mean - truth) / res.mean_stderr
    assert np.all(np.abs(z) < 4.5), z  # 16 sites: a false alarm is ~1e-4
    # neighbouring sites share chains, so the z-scores are correlated: a loose check only
    assert 0.05 < np.mean(z**2) < 4.0
    assert res.mean_stderr.max() < 0.02


@pytest.mark.slow
def test_gibbs_is_deterministic_given_the_key():
    post = small_posterior(2)
    a = gibbs.sample(jax.random.key(3), post, num_samples=20, burn_in=5, num_chains=2)
    b = gibbs.sample(jax.random.key(3), post, num_samples=20, burn_in=5, num_chains=2)
    c = gibbs.sample(jax.random.key(4), post, num_samples=20, burn_in=5, num_chains=2)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert not np.array_equal(a.mean, c.mean)
    assert a.history.shape == (26,) and a.iterations == 25


@pytest.mark.slow
def test_gibbs_step_only_moves_spins_and_keeps_shapes():
    post = small_posterior(3)
    import jax.numpy as jnp

    from varbayes.models.ising.energy import to_backend

    pj = to_backend(post, lambda a: jnp.asarray(a, dtype=jnp.float32))
    state = gibbs.init(jax.random.key(0), pj, num_chains=3)
    new, info = gibbs.step(jax.random.key(1), state, pj)
    assert new.z.shape == (3, 4, 4) and set(np.unique(np.asarray(new.z))) <= {-1.0, 1.0}
    assert info.log_joint.shape == (3,) and info.rao_blackwell.shape == (3, 4, 4)


def test_bad_gibbs_settings_raise():
    with pytest.raises(VarbayesError, match="num_samples"):
        gibbs.sample(jax.random.key(0), small_posterior(), num_samples=0)


def test_icm_climbs_to_a_local_maximum():
    rng = np.random.default_rng(5)
    clean = np.where(np.arange(20)[None, :] < 10, -1, 1) * np.ones((20, 1), dtype=np.int8)
    noise = Noise("flip", 0.1)
    x = corrupt(clean, noise, rng)
    post = make_posterior(x, noise, 1.0)
    res = gibbs.icm(post)
    assert np.all(np.diff(res.history) >= 0)
    f = neighbor_sum(res.estimate.astype(float), post.couplings) + post.field.h
    assert np.all(res.estimate * f >= 0)  # no single flip raises log p̃
    assert res.history[-1] == pytest.approx(float(log_joint(res.estimate.astype(float), post)))
    assert pixel_error(res.estimate, clean) < pixel_error(x, clean)


def test_icm_without_coupling_is_thresholding():
    post = small_posterior(6, J=0.0)
    res = gibbs.icm(post)
    np.testing.assert_array_equal(res.estimate, np.where(post.field.h >= 0, 1, -1))

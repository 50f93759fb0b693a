"""Ising exact inference: transfer matrix against brute force and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varbayes.inference.ising import cavi
from varbayes.models.errors import VarbayesError
from varbayes.models.ising import LocalField, Posterior, elbo_from_mean, exact, make_couplings


def random_posterior(rng, H, W, field_scale=1.0, coupling_scale=1.0):
    cp = make_couplings((coupling_scale * rng.normal(size=(H, W - 1)),
                         coupling_scale * rng.normal(size=(H - 1, W))), (H, W))
    return Posterior(cp, LocalField(field_scale * rng.normal(size=(H, W)),
                                    field_scale * rng.normal(size=(H, W))))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (2, 10), (1, 7)])
def test_transfer_matrix_equals_brute_force(seed, shape):
    post = random_posterior(np.random.default_rng(seed), *shape, field_scale=2.0)
    tm, bf = exact.transfer_matrix(post), exact.brute_force(post)
    assert tm.log_partition == pytest.approx(bf.log_partition, abs=1e-9)
    np.testing.assert_allclose(tm.marginals, bf.marginals, atol=1e-9)
    assert tm.marginals.shape == shape


def test_free_chain_partition_function_closed_form():
    """An open chain of n spins: Z = 2 · Π_edges 2 cosh(W_e)."""
    w = np.array([0.3, -1.2, 2.0, 0.5, 0.1])
    cp = make_couplings((w[None, :], np.zeros((0, 6))), (1, 6))
    expected = np.log(2) + np.sum(np.log(2 * np.cosh(w)))
    assert exact.log_prior_partition(cp) == pytest.approx(expected, abs=1e-12)


def test_log_evidence_with_zero_coupling_factorizes():
    """J = 0: p(x) = Π_i ½(p(x_i | +1) + p(x_i | −1)), and Z_W = 2^N."""
    rng = np.random.default_rng(7)
    post = random_posterior(rng, 4, 6)
    post = Posterior(make_couplings(0.0, (4, 6)), post.field)
    expected = np.sum(np.logaddexp(post.field.plus, post.field.minus) - np.log(2))
    assert exact.log_evidence(post) == pytest.approx(expected, abs=1e-10)
    np.testing.assert_allclose(exact.transfer_matrix(post).marginals,
                               1 / (1 + np.exp(post.field.minus - post.field.plus)), atol=1e-12)


def test_wide_grid_transposes_and_stays_exact():
    rng = np.random.default_rng(8)
    post = random_posterior(rng, 20, 1)  # 20 rows, 1 column: transposed to 1 x 20
    tm, bf = exact.transfer_matrix(post), exact.brute_force(post)
    assert tm.log_partition == pytest.approx(bf.log_partition, abs=1e-9)


def test_too_large_grids_are_refused_with_the_limit():
    post = random_posterior(np.random.default_rng(0), 15, 16)
    with pytest.raises(VarbayesError, match=r"min\(height, width\) <= 14"):
        exact.transfer_matrix(post)
    with pytest.raises(VarbayesError, match="the limit is 20"):
        exact.brute_force(random_posterior(np.random.default_rng(0), 3, 7))


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 4), W=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       field=st.floats(0.0, 3.0), coupling=st.floats(0.0, 2.0))
def test_meanfield_elbo_never_exceeds_the_exact_log_evidence(H, W, seed, field, coupling):
    rng = np.random.default_rng(seed)
    post = random_posterior(rng, H, W, field_scale=field, coupling_scale=coupling)
    log_z = exact.transfer_matrix(post, marginals=False).log_partition
    fit = cavi.run(post, schedule="checkerboard", max_iters=500, tol=1e-12)
    assert fit.elbo <= log_z + 1e-9
    random_mu = rng.uniform(-1, 1, size=(H, W))  # any q, not only the optimum
    assert elbo_from_mean(random_mu, post) <= log_z + 1e-9

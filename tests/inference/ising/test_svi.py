"""Ising SVI: closed-form SVI reaches CAVI in both backends; score SVI moves there."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.ising import cavi
from varbayes.inference.ising import svi as meanfield_svi
from varbayes.models.errors import VarbayesError
from varbayes.models.ising import Noise, corrupt, elbo_from_mean, make_posterior, neighbor_sum


def problem(shape, noise, seed=0):
    rng = np.random.default_rng(seed)
    clean = np.where(rng.random(shape) < 0.4, 1, -1)
    return corrupt(clean, noise, rng)


@pytest.mark.slow
@pytest.mark.parametrize("noise", [Noise("gaussian", 1.5), Noise("flip", 0.2)],
                         ids=lambda n: n.kind)
def test_cavi_pyro_and_numpyro_reach_the_same_optimum(noise):
    """J = 0.2: Σ_j |W_ij| ≤ 0.8 < 1 makes the update a contraction, so the optimum is unique."""
    x, J = problem((6, 6), noise), 0.2
    post = make_posterior(x, noise, J)
    ref = cavi.run(post, schedule="checkerboard", max_iters=1000, tol=1e-12)
    for backend in ("pyro", "numpyro"):
        svi = meanfield_svi.fit(backend, x, noise, J, loss="closed", steps=400, lr=0.05)
        assert svi.elbo == pytest.approx(ref.elbo, rel=1e-3), backend
        np.testing.assert_allclose(svi.mean, ref.mean, atol=5e-3)
        assert svi.history.shape == (401,) and svi.history[-1] > svi.history[0]


@pytest.mark.slow
def test_closed_form_svi_stops_at_a_cavi_fixed_point_with_strong_coupling():
    noise = Noise("gaussian", 1.5)
    x = problem((8, 8), noise, seed=1)
    post = make_posterior(x, noise, 0.6)
    svi = meanfield_svi.fit("pyro", x, noise, 0.6, loss="closed", steps=1500, lr=0.05)
    residual = np.tanh(neighbor_sum(svi.mean, post.couplings) + post.field.h) - svi.mean
    assert np.abs(residual).max() < 1e-3
    assert svi.elbo == pytest.approx(float(elbo_from_mean(svi.mean, post)), abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_score_function_svi_moves_toward_the_optimum(backend):
    noise, J = Noise("gaussian", 1.0), 0.2
    x = problem((4, 4), noise, seed=2)
    post = make_posterior(x, noise, J)
    best = cavi.run(post, max_iters=1000, tol=1e-12)
    fit = meanfield_svi.fit(backend, x, noise, J, loss="score", steps=300, lr=0.1,
                            num_particles=16, seed=0, init_logits=np.zeros((4, 4)))
    start_gap = best.elbo - fit.history[0]
    end_gap = best.elbo - fit.elbo
    assert start_gap > 5
    assert end_gap < 0.3 * start_gap, (start_gap, end_gap)
    assert np.corrcoef(fit.mean.ravel(), best.mean.ravel())[0, 1] > 0.9


def test_bad_settings_raise():
    x = problem((3, 3), Noise("gaussian", 1.0))
    with pytest.raises(VarbayesError, match="backend"):
        meanfield_svi.fit("stan", x, Noise("gaussian", 1.0), 0.5)
    with pytest.raises(VarbayesError, match="lr"):
        meanfield_svi.fit("pyro", x, Noise("gaussian", 1.0), 0.5, lr=-1.0)

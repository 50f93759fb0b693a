"""Ising CAVI: fixed points, monotone checkerboard ELBO, exactness at J = 0, accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.ising import cavi
from varbayes.models.errors import VarbayesError
from varbayes.models.ising import (
    Noise,
    corrupt,
    exact,
    make_posterior,
    neighbor_sum,
    pixel_error,
    threshold,
)


def noisy_problem(seed, shape=(32, 32), J=1.0, sigma=2.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = np.where((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (shape[0] / 3) ** 2,
                     1, -1)
    x = corrupt(clean, Noise("gaussian", sigma), rng)
    return clean, x, make_posterior(x, Noise("gaussian", sigma), J)


@pytest.mark.parametrize("damping", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("J", [0.3, 1.0, 2.0])
def test_checkerboard_elbo_never_decreases(damping, J):
    _, _, post = noisy_problem(0, J=J)
    res = cavi.run(post, schedule="checkerboard", damping=damping, max_iters=60, tol=0)
    steps = np.diff(res.history)
    assert np.all(steps >= -1e-9 * np.abs(res.history[1:])), steps.min()
    assert res.history[-1] > res.history[0]


@pytest.mark.parametrize("schedule,damping", [("checkerboard", 1.0), ("parallel", 0.5)])
def test_converges_to_a_fixed_point_of_the_update(schedule, damping):
    _, _, post = noisy_problem(1, J=0.8)
    res = cavi.run(post, schedule=schedule, damping=damping, max_iters=5000, tol=1e-10)
    assert res.iterations < 5000
    residual = np.tanh(neighbor_sum(res.mean, post.couplings) + post.field.h) - res.mean
    assert np.abs(residual).max() < 1e-8


def test_undamped_parallel_can_oscillate_where_checkerboard_cannot():
    """Strong coupling, zero field, a chessboard start: Jacobi flips every site each sweep."""
    _, _, post = noisy_problem(2, shape=(8, 8), J=1.0)
    post = post._replace(field=post.field._replace(plus=0 * post.field.plus,
                                                   minus=0 * post.field.minus))
    start = 0.9 * (2 * cavi.chessboard((8, 8)) - 1)
    jacobi = cavi.run(post, schedule="parallel", damping=1.0, max_iters=50, mu0=start)
    board = cavi.run(post, schedule="checkerboard", max_iters=50, mu0=start)
    assert jacobi.iterations == 50 and np.ptp(jacobi.history[-10:]) == 0  # a 2-cycle
    assert board.elbo > jacobi.elbo


def test_zero_coupling_gives_the_exact_marginals_in_one_sweep():
    _, _, post = noisy_problem(3, shape=(6, 7), J=0.0)
    res = cavi.run(post, max_iters=1, tol=0)
    p_plus = exact.transfer_matrix(post).marginals
    np.testing.assert_allclose(res.mean, 2 * p_plus - 1, atol=1e-12)
    assert res.elbo == pytest.approx(exact.transfer_matrix(post).log_partition, abs=1e-9)


def test_step_is_pure_and_reports_the_change():
    _, _, post = noisy_problem(4, shape=(8, 8))
    state = cavi.init(post)
    before = state.mu.copy()
    new, info = cavi.step(state, post, "parallel", 0.5)
    np.testing.assert_array_equal(state.mu, before)
    assert new.iteration == state.iteration + 1
    assert info.max_change == pytest.approx(np.abs(new.mu - before).max())
    np.testing.assert_allclose(before, np.tanh(post.field.h))  # the data-driven start


@pytest.mark.parametrize("kwargs, match", [
    ({"damping": 0.0}, "damping"), ({"damping": 1.5}, "damping"),
    ({"damping": float("nan")}, "damping"), ({"schedule": "random"}, "schedule"),
    ({"max_iters": 0}, "iters"),
])
def test_bad_settings_raise(kwargs, match):
    _, _, post = noisy_problem(0, shape=(4, 4))
    with pytest.raises(VarbayesError, match=match):
        cavi.run(post, **kwargs)


@pytest.mark.slow
def test_letter_a_sigma2_accuracy():
    """Murphy's setting (letterA, σ = 2, J = 1), 3 seeds: mean field ≤ 2.0%, Gibbs ≤ 1.7%."""
    import jax

    from varbayes.inference.data.datasets import load_binary_image
    from varbayes.inference.ising import gibbs

    try:
        clean = load_binary_image("letterA")
    except VarbayesError as e:
        pytest.skip(str(e))
    errors, sampled, thresholded = [], [], []
    for seed in range(3):
        x = corrupt(clean, Noise("gaussian", 2.0), np.random.default_rng(seed))
        post = make_posterior(x, Noise("gaussian", 2.0), 1.0)
        res = cavi.run(post, schedule="checkerboard", max_iters=200)
        errors.append(pixel_error(res.estimate, clean))
        draws = gibbs.sample(jax.random.key(seed), post, num_samples=200, burn_in=50)
        sampled.append(pixel_error(draws.estimate, clean))
        thresholded.append(pixel_error(threshold(x), clean))
    assert np.mean(errors) <= 0.020, errors
    assert np.mean(sampled) <= 0.017, sampled
    assert 0.29 < np.mean(thresholded) < 0.33

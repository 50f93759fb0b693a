"""Monte Carlo EM (inference/mcmc/mcem.py) against the exact maximum-likelihood answer of a
linear-Gaussian factor model, z ~ N(0, 1), x | z ~ N(w z + μ, σ²): p(x) = N(μ, w² + σ²), so
EM must end at μ = mean(x) and w² + σ² = var(x) (w and σ are not identified apart)."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.mcmc.mcem import MCEMOptions, check_options, mcem
from varbayes.models.errors import VarbayesError


def model(x, n_data=None):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    w, mu = numpyro.param("w", 0.5), numpyro.param("mu", 0.0)
    sigma = numpyro.param("sigma", 2.0, constraint=dist.constraints.positive)
    M = x.shape[0]
    with numpyro.handlers.substitute(data={"data": jnp.arange(M)}):  # the batch is the subsample
        plate = numpyro.plate("data", n_data or M, subsample_size=M)
    with plate:
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("x", dist.Normal(w * z + mu, sigma), obs=x)


def data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return (1.5 + 0.9 * rng.standard_normal(n) + 0.4 * rng.standard_normal(n)).astype(
        np.float32)


OPTIONS = MCEMOptions(epochs=60, batch_size=50, optimizer="adam", lr=0.02, m_steps=2,
                      hmc_steps=2, n_leapfrog=5, step_size=0.3, seed=1)


@pytest.mark.slow
def test_em_reaches_the_maximum_likelihood():
    x = data()
    r = mcem(model, x, options=OPTIONS)
    got = {k: float(v) for k, v in r.params.items()}
    assert got["mu"] == pytest.approx(x.mean(), abs=0.06)
    assert got["w"] ** 2 + got["sigma"] ** 2 == pytest.approx(x.var(), rel=0.08)
    # the E-step's chains: the step sizes adapted toward 90% acceptance
    assert 0.8 < r.history["accept"][-1] < 0.97
    assert r.history["objective"][-1] > r.history["objective"][0]
    assert r.epochs == OPTIONS.epochs and len(r.history["objective"]) == OPTIONS.epochs


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    x = data(100)
    o = OPTIONS._replace(epochs=4)
    full = mcem(model, x, options=o, checkpoint=tmp_path / "a.npz")
    mcem(model, x, options=o._replace(epochs=2), checkpoint=tmp_path / "b.npz")
    resumed = mcem(model, x, options=o, checkpoint=tmp_path / "b.npz", resume=True)
    assert resumed.start_epoch == 2
    for k, v in full.params.items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(resumed.params[k]))
    assert resumed.history["objective"] == full.history["objective"]
    with pytest.raises(VarbayesError, match="other options"):
        mcem(model, x, options=o._replace(lr=0.5), checkpoint=tmp_path / "b.npz", resume=True)


def test_a_pyro_model_is_refused():
    with pytest.raises(VarbayesError, match="NumPyro models only"):
        mcem(model, data(10), options=MCEMOptions(backend="pyro"))


@pytest.mark.parametrize("bad, match", [
    ({"m_steps": 0}, "m_steps must be an integer >= 1"),
    ({"target_accept": 1.0}, "target_accept must be in"),
    ({"lr": float("nan")}, "lr must be > 0"),
])
def test_bad_options(bad, match):
    with pytest.raises(VarbayesError, match=match):
        check_options(MCEMOptions()._replace(**bad))

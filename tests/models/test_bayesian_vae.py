"""Bayesian VAE (appendix F): closed-form KL, the minibatch estimator, backend parity."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from varbayes.models.bayesian_vae import numpyro_model as nbv
from varbayes.models.bayesian_vae import pyro_model as pbv
from varbayes.models.bayesian_vae.config import (
    BayesConfig,
    kl_normal,
    kl_weights,
    sample_theta,
    site,
    softplus,
    theta_shapes,
)
from varbayes.models.errors import VarbayesError
from varbayes.models.vae.config import VAEConfig

CFG = VAEConfig(x_dim=12, z_dim=2, hidden=(4,))
BAYES = BayesConfig(prior_scale=0.7, init_sigma=0.05)


def _data(n=12, seed=0):
    return (np.random.default_rng(seed).random((n, CFG.x_dim)) > 0.5).astype(np.float32)


def _trained_like(mod, seed=1):
    """A model whose q(θ) is far from its start: random μ and σ in (0.02, 0.5)."""
    rng = np.random.default_rng(seed)
    b = mod.build(CFG, BAYES, seed=0)
    loc = {k: rng.normal(0, 0.5, v.shape).astype(np.float32) for k, v in b.loc.items()}
    rho = {k: np.log(np.expm1(rng.uniform(0.02, 0.5, v.shape))).astype(np.float32)
           for k, v in b.rho.items()}
    return mod.build(CFG, BAYES, {**mod.weights(b), **loc}, rho)


def test_kl_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    loc, sigma, s = rng.normal(0, 1, 50), rng.uniform(0.05, 2, 50), 0.7
    w = loc + sigma * rng.standard_normal((200_000, 50))
    log_q = -0.5 * ((w - loc) / sigma) ** 2 - np.log(sigma)
    log_p = -0.5 * (w / s) ** 2 - np.log(s)
    mc = (log_q - log_p).sum(1)
    assert abs(kl_normal(loc, sigma, s) - mc.mean()) < 4 * mc.std() / np.sqrt(len(mc))
    assert kl_normal(np.zeros(3), np.full(3, s), s) == pytest.approx(0.0, abs=1e-12)


def test_site_names_and_init():
    b = nbv.build(CFG, BAYES, seed=3)
    assert list(b.loc) == ["dec.0.weight", "dec.0.bias", "dec.out.weight", "dec.out.bias"]
    assert set(theta_shapes(CFG)) == set(b.loc)
    _, sigma = nbv.posterior(b)
    assert all(np.allclose(v, BAYES.init_sigma, rtol=1e-5) for v in sigma.values())
    p = pbv.build(CFG, BAYES, seed=3)
    assert all(np.array_equal(p.loc[k], b.loc[k]) for k in b.loc)


def test_bad_prior_scale_and_init_sigma():
    for bad in (BayesConfig(prior_scale=0.0), BayesConfig(prior_scale=-1.0),
                BayesConfig(init_sigma=0.0), BayesConfig(prior_scale=float("nan"))):
        with pytest.raises(VarbayesError, match=r"prior-scale|init-sigma"):
            nbv.build(CFG, bad)


def _numpyro_objective(b, x, theta, z, n_data):
    """log p(x, z, θ) − log q(z, θ) at fixed draws, with the model's own plate scaling."""
    from numpyro.infer.util import log_density

    values = {**{site(k): v for k, v in theta.items()}, "z": z}
    lp, _ = log_density(nbv.model, (b, x), {"n_data": n_data}, values)
    lq, _ = log_density(nbv.guide, (b, x), {"n_data": n_data}, values)
    return float(lp) - float(lq)


@pytest.mark.slow
def test_minibatch_objectives_average_to_the_full_batch_objective():
    """Appendix F: with N/M-scaled local terms and the global log p(θ) − log q(θ) once per
    step, the mean of the minibatch objectives over one epoch is the full-data objective."""
    b = _trained_like(nbv)
    x = _data(12)
    rng = np.random.default_rng(2)
    theta = sample_theta(*nbv.posterior(b), rng)
    z = rng.standard_normal((12, CFG.z_dim)).astype(np.float32)
    full = _numpyro_objective(b, x, theta, z, None)
    perm = rng.permutation(12)
    parts = [_numpyro_objective(b, x[i], theta, z[i], 12) for i in np.split(perm, 4)]
    np.testing.assert_allclose(np.mean(parts), full, rtol=1e-5)
    # the global term is counted once: scaling it per batch would change the answer
    g = sum(float(_log_normal(theta[k], 0, BAYES.prior_scale).sum()) for k in theta)
    assert abs(np.mean(parts) - (full + 3 * g)) > 1.0


def _log_normal(v, m, s):
    return -0.5 * ((v - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)


@pytest.mark.slow
def test_pyro_numpyro_parity_same_params_and_draws():
    """Same variational params and the same (θ, z): log p(x, z, θ), log q(z, θ) and the
    analytic KL(q(θ)‖p(θ)) agree between the backends."""
    import torch
    from pyro import poutine

    nb = _trained_like(nbv)
    pb = pbv.build(CFG, BAYES, nbv.weights(nb), nb.rho)
    x = _data(10)
    rng = np.random.default_rng(5)
    theta = sample_theta(*nbv.posterior(nb), rng)
    z = rng.standard_normal((10, CFG.z_dim)).astype(np.float32)
    ref = _numpyro_objective(nb, x, theta, z, 40)
    values = {**{site(k): torch.tensor(v) for k, v in theta.items()}, "z": torch.tensor(z)}
    xt = torch.tensor(x)
    tp = poutine.trace(poutine.condition(pbv.model, values)).get_trace(pb, xt, n_data=40)
    tq = poutine.trace(poutine.condition(pbv.guide, values)).get_trace(pb, xt, n_data=40)
    ours = float(tp.log_prob_sum()) - float(tq.log_prob_sum())
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-4)
    sites = [n for n in poutine.trace(pbv.guide).get_trace(pb, xt).stochastic_nodes
             if n != "data"]
    assert sites == [site(k) for k in theta] + ["z"]
    kl_n = kl_weights(*nbv.posterior(nb), BAYES.prior_scale)
    kl_p = kl_weights(*pbv.posterior(pb), BAYES.prior_scale)
    assert kl_p == pytest.approx(kl_n, abs=1e-4)


@pytest.mark.parametrize("backend", ["pyro"])  # NumPyro training: the CLI test
def test_trained_params_round_trip_and_elbo_rises(backend):
    from varbayes.inference.data import datasets
    from varbayes.inference.vi.svi import SVIOptions, fit

    mod = {"numpyro": nbv, "pyro": pbv}[backend]
    cfg = VAEConfig(x_dim=64, z_dim=2, hidden=(16,))
    d = datasets.load("digits")
    x = datasets.dynamic_binarize(d.x_train[:200], np.random.default_rng(0))
    b = mod.build(cfg, BayesConfig(1.0, 1e-3), seed=0)
    r = fit(functools.partial(mod.model, b), functools.partial(mod.guide, b), (x, None),
            options=SVIOptions(backend=backend, epochs=8, batch_size=50, lr=1e-2, jit=False),
            eval_sets={"train": (x, None)})
    curve = r.history["train_elbo"]
    assert curve[-1] > curve[0] + 1.0, curve
    t = mod.with_params(b, r.params)
    loc, sigma = mod.posterior(t)
    assert not all(np.array_equal(loc[k], b.loc[k]) for k in loc)
    assert all(np.all(v > 0) for v in sigma.values())
    assert np.allclose(softplus(t.rho["dec.out.bias"]), sigma["dec.out.bias"])

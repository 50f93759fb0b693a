"""The VAE model+guide pairs: shapes, closed forms, and Pyro/NumPyro parity."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pyro
import pytest
import torch
from numpyro import handlers
from pyro import poutine
from scipy import stats

from varbayes.models.errors import VarbayesError
from varbayes.models.vae import numpyro_model as numpyro_vae
from varbayes.models.vae import pyro_model as pyro_vae
from varbayes.models.vae.config import (
    VAEConfig,
    check_data,
    condition_vector,
    hidden_mask,
    init_weights,
    n_params,
    validate,
    weight_shapes,
)

CONFIGS = {
    "bernoulli": VAEConfig(x_dim=12, z_dim=3, hidden=(7,)),
    "gaussian-relu-deep": VAEConfig(x_dim=12, z_dim=2, hidden=(9, 5), activation="relu",
                                    decoder="gaussian"),
    "label-cvae": VAEConfig(x_dim=12, z_dim=3, hidden=(7,), condition="label", n_classes=4,
                            prior_precision=1.0),
    "observed-cvae": VAEConfig(x_dim=12, z_dim=2, hidden=(6,), condition="observed",
                               image_shape=(4, 3), mask="lower"),
}


def _data(config: VAEConfig, M: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    if config.decoder == "bernoulli":
        x = (rng.random((M, config.x_dim)) < 0.4).astype(np.float32)
    else:
        x = rng.random((M, config.x_dim)).astype(np.float32)
    y = rng.integers(0, max(config.n_classes, 1), size=M)
    c = condition_vector(config, x, y)
    z = rng.normal(size=(M, config.z_dim)).astype(np.float32)
    return x, c, z


def _t(a):
    return None if a is None else torch.as_tensor(a)


def _j(a):
    return None if a is None else jnp.asarray(a)


def pyro_loss(vae, x, c, z, *, meanfield: bool, n_data=None) -> float:
    """Pyro's ELBO loss with the guide's z replayed from ``z`` (the same noise as NumPyro)."""
    args = (vae, _t(x), _t(c), n_data)
    tr = poutine.trace(pyro_vae.guide).get_trace(*args)
    tr.nodes["z"]["value"] = torch.as_tensor(z)
    elbo = pyro.infer.TraceMeanField_ELBO() if meanfield else pyro.infer.Trace_ELBO()
    return float(elbo.loss(pyro_vae.model, poutine.replay(pyro_vae.guide, trace=tr), *args))


def numpyro_loss(vae, x, c, z, *, meanfield: bool, n_data=None) -> float:
    """NumPyro's ELBO loss with the guide's z substituted by ``z``."""
    guide = handlers.substitute(numpyro_vae.guide, data={"z": jnp.asarray(z)})
    elbo = numpyro.infer.TraceMeanField_ELBO() if meanfield else numpyro.infer.Trace_ELBO()
    return float(elbo.loss(jax.random.PRNGKey(0), {}, numpyro_vae.model, guide, vae, _j(x), _j(c),
                           n_data))


# ------------------------------------------------------------------------------- config

def test_weight_layout_and_count():
    cfg = VAEConfig(x_dim=784, z_dim=20, hidden=(400,))
    shapes = weight_shapes(cfg)
    assert shapes["enc.0.weight"] == (400, 784)
    assert shapes["dec.out.weight"] == (784, 400)
    expected = (784 * 400 + 400) + 2 * (400 * 20 + 20) + (20 * 400 + 400) + (400 * 784 + 784)
    assert n_params(cfg) == expected
    w = init_weights(cfg, seed=3)
    assert all(v.dtype == np.float32 for v in w.values())
    assert np.abs(w["enc.0.weight"]).max() <= 1 / np.sqrt(784)
    paper = init_weights(cfg._replace(init_std=0.01), seed=3)
    assert abs(paper["dec.out.weight"].std() - 0.01) < 1e-3


def test_config_json_roundtrip():
    cfg = CONFIGS["observed-cvae"]
    import json

    assert VAEConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.cond_dim == 6 and hidden_mask(cfg).sum() == 6


@pytest.mark.parametrize("bad, match", [
    (dict(z_dim=0), "--latent must be > 0"),
    (dict(z_dim=-3), "--latent must be > 0"),
    (dict(hidden=()), "--hidden"),
    (dict(activation="sigmoid"), "--activation"),
    (dict(decoder="poisson"), "--decoder"),
    (dict(condition="label"), "labelled dataset"),
])
def test_bad_config(bad, match):
    with pytest.raises(VarbayesError, match=match):
        validate(VAEConfig(x_dim=12, z_dim=2)._replace(**bad))


def test_bad_data():
    cfg = VAEConfig(x_dim=4, z_dim=2)
    good = np.full((3, 4), 0.5, dtype=np.float32)
    assert check_data(good, cfg).dtype == np.float32
    with pytest.raises(VarbayesError, match="NaN"):
        check_data(np.where(np.eye(3, 4) > 0, np.nan, 0.5), cfg)
    with pytest.raises(VarbayesError, match=r"Bernoulli decoder needs \[0, 1\]"):
        check_data(good * 3, cfg)
    check_data(good * 3, cfg._replace(decoder="gaussian"))
    with pytest.raises(VarbayesError, match=r"shape \(N, 4\)"):
        check_data(good[:, :3], cfg)
    with pytest.raises(VarbayesError, match=r"shape \(N, 4\)"):
        check_data(good[0], cfg)


# ---------------------------------------------------------------------------- the models

@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_sites_same_order(name):
    cfg = CONFIGS[name]
    x, c, _ = _data(cfg)
    wts = init_weights(cfg, 0)
    pv, nv = pyro_vae.build(cfg, wts), numpyro_vae.build(cfg, wts)
    names = {}
    for backend in ("pyro", "numpyro"):
        for role in ("model", "guide"):
            if backend == "pyro":
                fn = getattr(pyro_vae, role)
                tr = poutine.trace(fn).get_trace(pv, _t(x), _t(c), 100)
                sites = [n for n, s in tr.nodes.items() if s["type"] == "sample" and n != "data"]
            else:
                fn = handlers.seed(getattr(numpyro_vae, role), 0)
                tr = handlers.trace(fn).get_trace(nv, _j(x), _j(c), 100)
                sites = [n for n, s in tr.items() if s["type"] == "sample"]
            names[backend, role] = sites
    expected_model = (["theta_prior"] if cfg.prior_precision > 0 else []) + ["z", "x"]
    assert names["pyro", "model"] == names["numpyro", "model"] == expected_model
    assert names["pyro", "guide"] == names["numpyro", "guide"] == ["z"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("meanfield", [True, False], ids=["analytic-kl", "mc"])
def test_parity_same_weights_same_noise(name, meanfield):
    """Same weights and the same z: the per-datapoint ELBOs agree to 1e-4 nats."""
    cfg = CONFIGS[name]
    x, c, z = _data(cfg)
    wts = init_weights(cfg, 1)
    lp = pyro_loss(pyro_vae.build(cfg, wts), x, c, z, meanfield=meanfield)
    ln = numpyro_loss(numpyro_vae.build(cfg, wts), x, c, z, meanfield=meanfield)
    assert abs(lp - ln) / len(x) < 1e-4


@pytest.mark.slow
def test_parity_monte_carlo_elbo():
    """Independent noise in each backend: the MC ELBOs agree within Monte Carlo error."""
    cfg = CONFIGS["bernoulli"]
    x, _, _ = _data(cfg, M=4)
    wts = init_weights(cfg, 2)
    pv, nv = pyro_vae.build(cfg, wts), numpyro_vae.build(cfg, wts)
    S = 400
    pyro.set_rng_seed(0)
    elbo_p = pyro.infer.Trace_ELBO()
    lp = np.array([elbo_p.loss(pyro_vae.model, pyro_vae.guide, pv, _t(x), None) for _ in range(S)])
    keys = jax.random.split(jax.random.PRNGKey(0), S)
    elbo_n = numpyro.infer.Trace_ELBO()
    ln = np.asarray(jax.vmap(lambda k: elbo_n.loss(k, {}, numpyro_vae.model, numpyro_vae.guide, nv,
                                                   jnp.asarray(x), None))(keys))
    se = np.sqrt(lp.var() / S + ln.var() / S)
    assert abs(lp.mean() - ln.mean()) < 4 * se
    assert lp.std() > 0 and ln.std() > 0  # really Monte Carlo


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_analytic_kl_closed_form(backend):
    """TraceMeanField_ELBO's KL term is −½Σ(1 + log σ² − μ² − σ²)."""
    cfg = CONFIGS["bernoulli"]
    x, c, z = _data(cfg)
    mod = pyro_vae if backend == "pyro" else numpyro_vae
    vae = mod.build(cfg, init_weights(cfg, 5))
    loss = (pyro_loss if backend == "pyro" else numpyro_loss)(vae, x, c, z, meanfield=True)
    mu, sigma = mod.encode(vae, x, c)
    kl = -0.5 * np.sum(1 + np.log(sigma**2) - mu**2 - sigma**2)
    log_lik = mod.log_likelihood(vae, x, z, c).sum()
    assert loss == pytest.approx(kl - log_lik, abs=1e-4)
    # and the Monte Carlo estimator at that z is log q − log p(z) − log p(x|z)
    mc = (pyro_loss if backend == "pyro" else numpyro_loss)(vae, x, c, z, meanfield=False)
    log_q = stats.norm.logpdf(z, mu, sigma).sum()
    log_prior = stats.norm.logpdf(z).sum()
    assert mc == pytest.approx(log_q - log_prior - log_lik, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_subsample_scale_is_n_over_m(backend):
    """With n_data=N the local terms are scaled by N/M: the full-data estimator."""
    cfg = CONFIGS["gaussian-relu-deep"]
    x, c, z = _data(cfg, M=5)
    mod = pyro_vae if backend == "pyro" else numpyro_vae
    vae = mod.build(cfg, init_weights(cfg, 0))
    fn = pyro_loss if backend == "pyro" else numpyro_loss
    unscaled = fn(vae, x, c, z, meanfield=True)
    scaled = fn(vae, x, c, z, meanfield=True, n_data=100)
    assert scaled == pytest.approx(unscaled * 100 / 5, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_weight_prior_is_standard_normal_log_density(backend):
    """Weight decay is the log density of N(0, λ⁻¹ I) over the decoder weights, counted once."""
    cfg = CONFIGS["label-cvae"]._replace(prior_precision=2.0)
    wts = init_weights(cfg, 0)
    mod = pyro_vae if backend == "pyro" else numpyro_vae
    vae = mod.build(cfg, wts)
    expected = sum(stats.norm.logpdf(v, 0, 1 / np.sqrt(2.0)).sum()
                   for k, v in wts.items() if k.startswith("dec."))
    assert float(mod.log_weight_prior(vae.decoder, 2.0).detach() if backend == "pyro" else
                 mod.log_weight_prior(vae.decoder, 2.0)) == pytest.approx(expected, rel=1e-5)
    # the factor is outside the data plate: not scaled by N/M
    x, c, z = _data(cfg, M=5)
    fn = pyro_loss if backend == "pyro" else numpyro_loss
    with_prior = fn(vae, x, c, z, meanfield=True, n_data=50)
    without = fn(mod.build(cfg._replace(prior_precision=0.0), wts), x, c, z, meanfield=True,
                 n_data=50)
    assert with_prior - without == pytest.approx(-expected, rel=1e-4)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_weights_roundtrip_and_shapes(backend):
    cfg = CONFIGS["observed-cvae"]
    wts = init_weights(cfg, 7)
    mod = pyro_vae if backend == "pyro" else numpyro_vae
    vae = mod.build(cfg, wts)
    back = mod.weights(vae)
    assert set(back) == set(wts)
    assert all(np.array_equal(back[k], wts[k]) for k in wts)
    x, c, z = _data(cfg, M=5)
    mu, sigma = mod.encode(vae, x, c)
    assert mu.shape == sigma.shape == (5, 2) and (sigma > 0).all()
    assert mod.decode(vae, z, c).shape == (5, 12)
    assert mod.decode(vae, np.stack([z, z]), c).shape == (2, 5, 12)  # leading particle dims
    with pytest.raises(VarbayesError, match="shape"):
        mod.build(cfg, {**wts, "enc.0.weight": wts["enc.0.weight"][:, :3]})


@pytest.mark.slow
def test_gaussian_decoder_variance_bounded():
    cfg = CONFIGS["gaussian-relu-deep"]._replace(min_scale=0.05)
    wts = {k: v * 100 for k, v in init_weights(cfg, 0).items()}  # push the raw scale far down
    vae = numpyro_vae.build(cfg, wts)
    z = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32) * 10
    _, scale = vae.decoder(jnp.asarray(z))
    assert float(scale.min()) >= 0.05
    _, scale_t = pyro_vae.build(cfg, wts).decoder(torch.as_tensor(z))
    assert float(scale_t.min().detach()) >= 0.05


@pytest.mark.slow
def test_pyro_model_runs_under_svi_with_particles():
    """The pair works with vectorized particles (L > 1) in both backends."""
    cfg = CONFIGS["label-cvae"]
    x, c, _ = _data(cfg)
    wts = init_weights(cfg, 0)
    pv = pyro_vae.build(cfg, wts)
    elbo = pyro.infer.Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    lp = elbo.loss(pyro_vae.model, pyro_vae.guide, pv, _t(x), _t(c), 40)
    nv = numpyro_vae.build(cfg, wts)
    ln = numpyro.infer.Trace_ELBO(num_particles=3).loss(
        jax.random.PRNGKey(1), {}, functools.partial(numpyro_vae.model, nv),
        functools.partial(numpyro_vae.guide, nv), _j(x), _j(c), 40)
    assert np.isfinite(lp) and np.isfinite(float(ln))


@pytest.mark.slow
def test_estimator_b_has_lower_gradient_variance_same_mean():
    """Analytic KL (B) lowers the gradient variance of the reparameterized ELBO (A) and
    leaves its mean unchanged: both are unbiased."""
    from varbayes.inference.data import datasets
    from varbayes.models.vae.evaluate import gradient_variance

    d = datasets.load("digits")
    x = datasets.dynamic_binarize(d.x_test[:50], np.random.default_rng(0))
    vae = numpyro_vae.build(VAEConfig(x_dim=64, z_dim=5, hidden=(32,)), seed=0)
    var_a, mean2_a = gradient_variance(vae, x, None, "trace", n_draws=128)
    var_b, mean2_b = gradient_variance(vae, x, None, "meanfield", n_draws=128)
    assert var_b < 0.9 * var_a
    assert mean2_b == pytest.approx(mean2_a, rel=0.05)

"""IWAE and DReG (inference/vi/iwae.py) against exact answers on linear-Gaussian models.

Model: z ~ N(θ, 1), x | z ~ N(z, 1), so p(x) = N(x; θ, 2) and p(z|x) = N((x + θ)/2, 1/2).
Guide: q(z|x) = N(a x + b, s²). With a = 1/2, b = θ/2, s² = 1/2 the guide is the posterior and
every log weight is log p(x): L_K = log p(x) exactly, for any K, in both backends.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from varbayes.inference.vi.iwae import PyroIWAE, numpyro_iwae
from varbayes.models.errors import VarbayesError

TH = 0.3
EXACT = {"theta": TH, "a": 0.5, "b": TH / 2, "s": math.sqrt(0.5)}
WIDE = {"theta": TH, "a": 0.3, "b": 0.2, "s": 1.0}  # not the posterior


def log_px(x):
    return -0.5 * np.log(2 * np.pi * 2) - (np.asarray(x, np.float64) - TH) ** 2 / 4


# ------------------------------------------------------------------------- the two pairs

def pyro_pair(p):
    import pyro
    import pyro.distributions as dist
    import torch

    pyro.clear_param_store()

    def model(x):
        t = pyro.param("theta", torch.tensor(p["theta"]))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(t, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor(p["a"]))
        b = pyro.param("b", torch.tensor(p["b"]))
        s = pyro.param("s", torch.tensor(p["s"]), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x + b, s))

    return model, guide


def numpyro_model(x):
    import numpyro
    import numpyro.distributions as dist

    t = numpyro.param("theta", TH)
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Normal(t, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def numpyro_guide(x):
    import numpyro
    import numpyro.distributions as dist

    a, b = numpyro.param("a", 0.0), numpyro.param("b", 0.0)
    s = numpyro.param("s", 1.0, constraint=dist.constraints.positive)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("z", dist.Normal(a * x + b, s))


def jparams(p):
    import jax.numpy as jnp

    return {k: jnp.float32(v) for k, v in p.items()}


# -------------------------------------------------------------------------------- values

@pytest.mark.slow
@pytest.mark.parametrize("dreg", [False, True])
@pytest.mark.parametrize("K", [1, 7])
def test_exact_guide_gives_log_evidence_in_both_backends(K, dreg):
    import jax
    import torch

    x = np.array([0.1, -1.0, 2.5], np.float32)
    model, guide = pyro_pair(EXACT)
    obj = PyroIWAE(K, dreg)
    np.testing.assert_allclose(obj.bound(model, guide, torch.tensor(x)).detach().numpy(),
                               log_px(x), rtol=1e-5)
    assert -obj.differentiable_loss(model, guide, torch.tensor(x)).item() == pytest.approx(
        log_px(x).sum(), rel=1e-5)
    nobj = numpyro_iwae(K, dreg)
    key, p = jax.random.PRNGKey(0), jparams(EXACT)
    np.testing.assert_allclose(nobj.bound(key, p, numpyro_model, numpyro_guide, x), log_px(x),
                               rtol=1e-5)
    assert -float(nobj.loss(key, p, numpyro_model, numpyro_guide, x)) == pytest.approx(
        log_px(x).sum(), rel=1e-5)


@pytest.mark.slow
def test_one_sample_is_the_trace_elbo_on_the_same_noise():
    import jax
    import pyro
    import torch
    from numpyro.infer import Trace_ELBO as NumPyroTrace

    x = np.array([0.1, -1.0, 2.5, 0.7], np.float32)
    model, guide = pyro_pair(WIDE)
    torch.manual_seed(3)
    want = pyro.infer.Trace_ELBO().loss(model, guide, torch.tensor(x))
    torch.manual_seed(3)
    assert PyroIWAE(1).loss(model, guide, torch.tensor(x)) == pytest.approx(want, rel=1e-5)
    key, p = jax.random.PRNGKey(3), jparams(WIDE)
    assert float(numpyro_iwae(1).loss(key, p, numpyro_model, numpyro_guide, x)) == \
        pytest.approx(float(NumPyroTrace().loss(key, p, numpyro_model, numpyro_guide, x)),
                      rel=1e-5)


def reference_bound(K, x, n=400_000, seed=0):
    """E[L_K(x)] for the WIDE guide by plain numpy Monte Carlo, with its standard error."""
    rng = np.random.default_rng(seed)
    a, b, s = WIDE["a"], WIDE["b"], WIDE["s"]
    z = a * x + b + s * rng.standard_normal((n, K))
    lw = (-0.5 * np.log(2 * np.pi) - 0.5 * (z - TH) ** 2
          - 0.5 * np.log(2 * np.pi) - 0.5 * (x - z) ** 2
          + 0.5 * np.log(2 * np.pi * s * s) + 0.5 * ((z - a * x - b) / s) ** 2)
    m = lw.max(1, keepdims=True)
    bound = (m[:, 0] + np.log(np.exp(lw - m).mean(1)))
    return bound.mean(), bound.std() / math.sqrt(n)


@pytest.mark.slow
@pytest.mark.parametrize("K", [1, 5, 50])
def test_the_bound_is_unbiased_for_its_monte_carlo_expectation(K):
    """Each of M replicate datapoints gives an independent draw of L_K(x): their mean must
    match numpy's estimate of E[L_K] within Monte Carlo error, and E[L_K] rises with K
    towards log p(x)."""
    import jax
    import torch

    x0, M = 1.0, 20_000
    want, want_se = reference_bound(K, x0)
    assert want < log_px(x0)
    x = np.full(M, x0, np.float32)
    model, guide = pyro_pair(WIDE)
    torch.manual_seed(K)
    ours = {"pyro": PyroIWAE(K).bound(model, guide, torch.tensor(x)).detach().double().numpy(),
            "numpyro": np.asarray(numpyro_iwae(K).bound(
                jax.random.PRNGKey(K), jparams(WIDE), numpyro_model, numpyro_guide, x),
                np.float64)}
    for backend, b in ours.items():
        se = math.hypot(b.std() / math.sqrt(M), want_se)
        assert abs(b.mean() - want) < 4 * se, (backend, b.mean(), want, se)
    if K > 1:
        assert want > reference_bound(1, x0)[0]


# ----------------------------------------------------------------------------- gradients

def numpyro_grads(K, dreg, R, x0=1.0, model=numpyro_model, guide=numpyro_guide, p=WIDE,
                  seed=0):
    """R independent gradients of the single-datapoint objective, {param: (R,)}."""
    import jax
    import jax.numpy as jnp

    obj = numpyro_iwae(K, dreg)
    x = jnp.array([x0], jnp.float32)

    def grad(key):
        return jax.grad(lambda q: -obj.loss(key, q, model, guide, x))(jparams(p))

    g = jax.jit(jax.vmap(grad))(jax.random.split(jax.random.PRNGKey(seed), R))
    return {k: np.asarray(v, np.float64) for k, v in g.items()}


def pyro_grads(K, dreg, R, x0=1.0, chunk=1000, p=WIDE):
    """Gradients of the single-datapoint objective averaged over ``chunk`` replicates, R/chunk
    of them, {param: (R/chunk,)} (mean over chunk replicates: divide the spread accordingly)."""
    import pyro
    import torch

    model, guide = pyro_pair(p)
    obj = PyroIWAE(K, dreg)
    torch.manual_seed(K + 100 * dreg)
    out = {}
    x = torch.full((chunk,), x0)
    for _ in range(R // chunk):
        objective = -obj.differentiable_loss(model, guide, x) / chunk
        store = pyro.get_param_store()
        names = sorted(store.keys())
        # d/d log s = s d/ds: the same as NumPyro's d/ds at WIDE's s = 1
        grads = torch.autograd.grad(objective,
                                    [store.get_param(n).unconstrained() for n in names])
        for n, g in zip(names, grads, strict=True):
            out.setdefault(n, []).append(float(g))
    return {k: np.asarray(v) for k, v in out.items()}


def _agree(a, b, sigmas=4.0):
    se = math.hypot(a.std() / math.sqrt(len(a)), b.std() / math.sqrt(len(b)))
    return abs(a.mean() - b.mean()) < sigmas * se + 1e-7, (a.mean(), b.mean(), se)


@pytest.mark.slow
@pytest.mark.parametrize("K", [3, 20])
def test_dreg_has_the_iwae_gradient_in_expectation(K):
    """θ: the same estimator (identical draws give identical θ-gradients); φ: DReG's mean
    equals IWAE's within MC error, in NumPyro (20,000 draws) and in Pyro (20 means of
    1,000), and the two backends agree."""
    iw, dr = numpyro_grads(K, False, 20_000), numpyro_grads(K, True, 20_000)
    np.testing.assert_allclose(iw["theta"], dr["theta"], rtol=1e-5, atol=1e-6)
    for name in ("a", "b", "s"):
        ok, info = _agree(iw[name], dr[name])
        assert ok, (name, info)
    piw, pdr = pyro_grads(K, False, 20_000), pyro_grads(K, True, 20_000)
    for name in ("theta", "a", "b", "s"):
        ok, info = _agree(pdr[name], dr[name])
        assert ok, ("pyro dreg vs numpyro", name, info)
        ok, info = _agree(piw[name], iw[name])
        assert ok, ("pyro iwae vs numpyro", name, info)


@pytest.mark.slow
def test_signal_to_noise_of_the_guide_gradient_falls_for_iwae_and_rises_for_dreg():
    """Rainforth et al. (2018): the IWAE φ-gradient's SNR falls like 1/√K; DReG's grows."""
    snr = {}
    for dreg in (False, True):
        for K in (1, 10, 100):
            g = numpyro_grads(K, dreg, 10_000, seed=K)
            snr[dreg, K] = {n: abs(g[n].mean()) / g[n].std() for n in ("b", "s")}
    for n in ("b", "s"):
        assert snr[False, 100][n] < snr[False, 10][n] < snr[False, 1][n]
        assert snr[False, 100][n] < snr[False, 1][n] / 4, snr
        assert snr[True, 100][n] > snr[True, 10][n] > snr[True, 1][n]
        assert snr[True, 100][n] > 4 * snr[True, 1][n], snr


def hierarchical_numpyro():
    """z1 ~ N(0,1), z2 ~ N(z1,1), x ~ N(z2,1); q(z1|x) q(z2|z1,x): the second guide factor
    depends on z1, so DReG must keep ∂log q(z2|z1)/∂z1 with φ held fixed."""
    import numpyro
    import numpyro.distributions as dist

    def model(x):
        with numpyro.plate("data", x.shape[0]):
            z1 = numpyro.sample("z1", dist.Normal(0.0, 1.0))
            z2 = numpyro.sample("z2", dist.Normal(z1, 1.0))
            numpyro.sample("x", dist.Normal(z2, 1.0), obs=x)

    def guide(x):
        b1, c = numpyro.param("b1", 0.0), numpyro.param("c", 0.0)
        s1 = numpyro.param("s1", 1.0, constraint=dist.constraints.positive)
        s2 = numpyro.param("s2", 1.0, constraint=dist.constraints.positive)
        with numpyro.plate("data", x.shape[0]):
            z1 = numpyro.sample("z1", dist.Normal(0.2 * x + b1, s1))
            numpyro.sample("z2", dist.Normal(c * z1 + 0.3 * x, s2))

    return model, guide


@pytest.mark.slow
def test_dreg_with_a_hierarchical_guide_keeps_the_iwae_expectation():
    model, guide = hierarchical_numpyro()
    p = {"b1": 0.1, "c": 0.5, "s1": 0.9, "s2": 0.8}
    iw = numpyro_grads(8, False, 40_000, model=model, guide=guide, p=p)
    dr = numpyro_grads(8, True, 40_000, model=model, guide=guide, p=p)
    for name in p:
        ok, info = _agree(iw[name], dr[name])
        assert ok, (name, info)


# ------------------------------------------------------------------------------ refusals

@pytest.mark.slow
def test_a_global_latent_is_refused_in_one_line():
    import jax
    import numpyro
    import numpyro.distributions as dist
    import pyro
    import pyro.distributions as pdist
    import torch

    def nmodel(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def nguide(x):
        numpyro.sample("mu", dist.Normal(numpyro.param("m", 0.0), 1.0))

    def pmodel(x):
        mu = pyro.sample("mu", pdist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pdist.Normal(mu, 1.0), obs=x)

    def pguide(x):
        pyro.sample("mu", pdist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    x = np.zeros(4, np.float32)
    for dreg in (False, True):
        with pytest.raises(VarbayesError, match="'mu' is outside the data plate"):
            numpyro_iwae(3, dreg).loss(jax.random.PRNGKey(0), {}, nmodel, nguide, x)
        with pytest.raises(VarbayesError, match="'mu' is outside the data plate"):
            PyroIWAE(3, dreg).differentiable_loss(pmodel, pguide, torch.tensor(x))


@pytest.mark.slow
def test_fit_refuses_a_global_latent_before_training():
    import numpyro
    import numpyro.distributions as dist

    from varbayes.inference.vi.svi import SVIOptions, fit

    def model(x, n_data=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", n_data or x.shape[0], subsample_size=x.shape[0]):
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x, n_data=None):
        numpyro.sample("mu", dist.Normal(numpyro.param("m", 0.0), 1.0))

    x = np.zeros(40, np.float32)
    with pytest.raises(VarbayesError, match=r"outside the data plate.*--objective elbo"):
        fit(model, guide, x, options=SVIOptions(objective="iwae", particles=4, batch_size=10))
    with pytest.raises(VarbayesError, match="outside the data plate"):  # the IS estimate too
        fit(model, guide, x, options=SVIOptions(is_every=1, batch_size=10))
    fit(model, guide, x, options=SVIOptions(epochs=1, batch_size=10))  # the ELBO is fine


# ----------------------------------------------------------------------------- in fit()

@pytest.fixture(scope="module")
def digits():
    from varbayes.inference.data import datasets

    d = datasets.load("digits")
    rng = np.random.default_rng(0)
    return (datasets.dynamic_binarize(d.x_train[:300], rng),
            datasets.dynamic_binarize(d.x_test[:120], rng))


def _vae_fit(backend, objective, train, test, checkpoint=None, epochs=3, resume=False):
    from varbayes.inference.vi.svi import SVIOptions, fit
    from varbayes.models.vae import numpyro_model, pyro_model
    from varbayes.models.vae.config import VAEConfig

    mod = {"pyro": pyro_model, "numpyro": numpyro_model}[backend]
    vae = mod.build(VAEConfig(x_dim=64, z_dim=3, hidden=(24,)), seed=1)
    options = SVIOptions(backend=backend, objective=objective, particles=4, epochs=epochs,
                         batch_size=50, lr=3e-3, is_every=2, is_particles=30)
    return fit(functools.partial(mod.model, vae), functools.partial(mod.guide, vae), (train,),
               options=options, eval_sets={"test": (test,)}, checkpoint=checkpoint,
               resume=resume)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["iwae", "dreg"])
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_fit_records_the_bound_and_the_is_estimate_and_resumes_exactly(
        backend, objective, digits, tmp_path):
    train, test = digits
    full = _vae_fit(backend, objective, train, test, epochs=3)
    h = full.history
    assert h["is_epoch"] == [2, 3]  # every 2 epochs and after the last
    assert len(h["test_is"]) == 2 and len(h["objective"]) == 3
    # the K=30 bound lies above the ELBO of the same weights (by more than its noise here)
    assert h["test_is"][-1] > h["test_elbo"][-1]
    ckpt = tmp_path / "c.npz"
    _vae_fit(backend, objective, train, test, ckpt, epochs=2)
    resumed = _vae_fit(backend, objective, train, test, ckpt, epochs=3, resume=True)
    assert resumed.start_epoch == 2
    for k in full.params:
        np.testing.assert_array_equal(np.asarray(resumed.params[k]),
                                      np.asarray(full.params[k]))
    assert resumed.history["test_is"] == h["test_is"]

"""Wake-sleep and RWS (inference/vi/wake_sleep.py) against exact answers on a linear-Gaussian
factor model.

Model: z ~ N(0, 1), x | z ~ N(w z + μ, σ²), so p(x) = N(μ, w² + σ²) and
p(z|x) = N(w (x − μ)/(w² + σ²), σ²/(w² + σ²)). Guide: q(z|x) = N(a x + b, s²), which holds
the posterior. Every expected wake and sleep gradient has a closed form, and both algorithms
have one fixed point: the maximum-likelihood μ = mean(x), w² + σ² = var(x) (w and σ are not
identified apart), with the guide equal to the posterior.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from varbayes.inference.vi.svi import SVIOptions, check_options, fit
from varbayes.inference.vi.wake_sleep import PyroWakeSleep, numpyro_wake_sleep
from varbayes.models.errors import VarbayesError

START = {"w": 0.8, "mu": 0.2, "sigma": 1.3, "a": 0.1, "b": -0.3, "s": 0.9}


def posterior(p):
    """(a, b, s) of the exact posterior under the model's (w, μ, σ)."""
    v = p["w"] ** 2 + p["sigma"] ** 2
    return {"a": p["w"] / v, "b": -p["mu"] * p["w"] / v, "s": p["sigma"] / math.sqrt(v)}


def log_px(x, p):
    v = p["w"] ** 2 + p["sigma"] ** 2
    return -0.5 * np.log(2 * np.pi * v) - (np.asarray(x, np.float64) - p["mu"]) ** 2 / (2 * v)


def pyro_pair(p):
    import pyro
    import pyro.distributions as dist
    import torch

    pyro.clear_param_store()
    positive = dist.constraints.positive

    def plate(x, n_data):  # the minibatch is the subsample of n_data points
        return pyro.plate("data", n_data or x.shape[0], subsample=torch.arange(x.shape[0]))

    def model(x, n_data=None):
        w, mu = pyro.param("w", torch.tensor(p["w"])), pyro.param("mu", torch.tensor(p["mu"]))
        sigma = pyro.param("sigma", torch.tensor(p["sigma"]), constraint=positive)
        with plate(x, n_data):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(w * z + mu, sigma), obs=x)

    def guide(x, n_data=None):
        a, b = pyro.param("a", torch.tensor(p["a"])), pyro.param("b", torch.tensor(p["b"]))
        s = pyro.param("s", torch.tensor(p["s"]), constraint=positive)
        with plate(x, n_data):
            pyro.sample("z", dist.Normal(a * x + b, s))

    return model, guide


def numpyro_pair(p):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    positive = dist.constraints.positive

    def plate(x, n_data):  # the minibatch is the subsample of n_data points
        M = x.shape[0]
        with numpyro.handlers.substitute(data={"data": jnp.arange(M)}):
            return numpyro.plate("data", n_data or M, subsample_size=M)

    def model(x, n_data=None):
        w, mu = numpyro.param("w", p["w"]), numpyro.param("mu", p["mu"])
        sigma = numpyro.param("sigma", p["sigma"], constraint=positive)
        with plate(x, n_data):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            numpyro.sample("x", dist.Normal(w * z + mu, sigma), obs=x)

    def guide(x, n_data=None):
        a, b = numpyro.param("a", p["a"]), numpyro.param("b", p["b"])
        s = numpyro.param("s", p["s"], constraint=positive)
        with plate(x, n_data):
            numpyro.sample("z", dist.Normal(a * x + b, s))

    return model, guide


def jparams(p):
    import jax.numpy as jnp

    return {k: jnp.float32(v) for k, v in p.items()}


# -------------------------------------------------------------------------------- values

@pytest.mark.slow
@pytest.mark.parametrize("objective,K", [("wake-sleep", 1), ("wake-sleep", 4), ("rws", 4)])
def test_value_is_the_log_evidence_with_the_exact_guide(objective, K):
    """The reported value is L_K, which equals log p(x) for the exact posterior guide."""
    import jax
    import torch

    p = START | posterior(START)
    x = np.array([0.1, -1.0, 2.5], np.float32)
    model, guide = pyro_pair(p)
    got = -PyroWakeSleep(K, objective).loss(model, guide, torch.tensor(x))
    assert got == pytest.approx(log_px(x, p).sum(), rel=1e-5)
    model, guide = numpyro_pair(p)
    got = -float(numpyro_wake_sleep(K, objective).loss(jax.random.PRNGKey(0), jparams(p),
                                                      model, guide, x))
    assert got == pytest.approx(log_px(x, p).sum(), rel=1e-5)


# ----------------------------------------------------------------------------- gradients

def expected_gradients(x0, p):
    """Per datapoint, E[∂/∂param] of wake θ (z ~ q(z|x0)) and sleep φ ((z, x) ~ p)."""
    w, mu, sig, a, b, s = (p[k] for k in ("w", "mu", "sigma", "a", "b", "s"))
    m = a * x0 + b
    r = x0 - mu - w * m
    wake = {"mu": r / sig ** 2, "w": ((x0 - mu) * m - w * (m * m + s * s)) / sig ** 2,
            "sigma": -1 / sig + (r * r + w * w * s * s) / sig ** 3}
    e = -a * mu - b  # E[z − a x − b] under p
    sleep = {"b": e / s ** 2, "a": (w - a * (w * w + sig ** 2 + mu * mu) - b * mu) / s ** 2,
             "s": -1 / s + ((1 - a * w) ** 2 + a * a * sig ** 2 + e * e) / s ** 3}
    return wake | sleep


def numpyro_gradients(p, x0, M, R):
    """R independent per-datapoint mean gradients, each over M replicates of x0."""
    import jax

    model, guide = numpyro_pair(p)
    obj = numpyro_wake_sleep(1, "wake-sleep")
    x = np.full(M, x0, np.float32)

    def grad(key):
        return jax.grad(lambda q: -obj.loss(key, q, model, guide, x) / M)(jparams(p))

    g = jax.jit(jax.vmap(grad))(jax.random.split(jax.random.PRNGKey(1), R))
    return {k: np.asarray(v, np.float64) for k, v in g.items()}


def pyro_gradients(p, x0, M, R):
    """As :func:`numpyro_gradients`; positive params by d/d(constrained) (chain rule)."""
    import pyro
    import torch

    model, guide = pyro_pair(p)
    obj = PyroWakeSleep(1, "wake-sleep")
    torch.manual_seed(1)
    x = torch.full((M,), x0)
    out: dict[str, list[float]] = {}
    for _ in range(R):
        objective = -obj.differentiable_loss(model, guide, x) / M
        store = pyro.get_param_store()
        names = sorted(store.keys())
        grads = torch.autograd.grad(objective,
                                    [store.get_param(n).unconstrained() for n in names])
        for n, g in zip(names, grads, strict=True):
            dlog = n in ("sigma", "s")  # d/d log v = v d/dv
            out.setdefault(n, []).append(float(g) / (p[n] if dlog else 1.0))
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_wake_and_sleep_gradients_match_their_closed_forms(backend):
    """θ's gradient is the wake phase's E_q[∇θ log p(x, z)] and φ's the sleep phase's
    E_p(z,x)[∇φ log q(z|x)], each within 4 standard errors of the closed form."""
    x0, M, R = 1.4, 4000, 24
    g = (numpyro_gradients if backend == "numpyro" else pyro_gradients)(START, x0, M, R)
    want = expected_gradients(x0, START)
    for name, v in want.items():
        se = g[name].std(ddof=1) / math.sqrt(R)
        assert abs(g[name].mean() - v) < 4 * se + 1e-4, (backend, name, g[name].mean(), v, se)


# -------------------------------------------------------------------------- fixed point

@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("objective,K", [("wake-sleep", 1), ("rws", 5)])
def test_fit_reaches_maximum_likelihood_and_the_exact_posterior(backend, objective, K):
    """Trained by fit, both algorithms end at the MLE of the marginal N(μ, w² + σ²) with the
    guide at the model's exact posterior."""
    rng = np.random.default_rng(0)
    x = (1.5 + 1.7 * rng.standard_normal(400)).astype(np.float32)
    pair = pyro_pair(START) if backend == "pyro" else numpyro_pair(START)
    options = SVIOptions(backend=backend, objective=objective, particles=K, lr=0.02,
                         epochs=300, batch_size=100, seed=2)
    r = fit(*pair, x, options=options)
    got = {k: float(v) for k, v in r.params.items()}
    assert got["mu"] == pytest.approx(x.mean(), abs=0.08)
    assert got["w"] ** 2 + got["sigma"] ** 2 == pytest.approx(x.var(), rel=0.08)
    for k, v in posterior(got).items():
        assert got[k] == pytest.approx(v, abs=0.05), (k, got[k], v)
    assert r.history["objective"][-1] == pytest.approx(log_px(x, got).mean(), abs=0.05)


# ------------------------------------------------------------------------------ refusals

def test_refusals():
    import pyro
    import pyro.distributions as dist
    import torch

    with pytest.raises(VarbayesError, match=r"--objective rws .* --particles >= 2"):
        check_options(SVIOptions(objective="rws", particles=1))
    with pytest.raises(VarbayesError, match="--particles >= 2"):
        numpyro_wake_sleep(1, "rws")
    with pytest.raises(VarbayesError, match="--particles >= 2"):
        PyroWakeSleep(1, "rws")

    def model(x):  # the observed value is not an argument: the sleep phase cannot swap it
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=2 * x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, 1.0))

    with pytest.raises(VarbayesError, match="'x' does not take its value from an argument"):
        PyroWakeSleep(1).loss(model, guide, torch.zeros(3))

    def global_model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def global_guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(VarbayesError, match="'mu' is outside the data plate"):
        PyroWakeSleep(2).loss(global_model, global_guide, torch.zeros(3))

"""The Ising model: energy and ELBO against explicit sums, noise models, backend parity."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.stats import norm

from varbayes.models.errors import VarbayesError
from varbayes.models.ising import (
    LocalField,
    Noise,
    Posterior,
    corrupt,
    elbo_from_logits,
    elbo_from_mean,
    local_field,
    log_joint,
    make_couplings,
    make_posterior,
    neighbor_sum,
    pixel_error,
)
from varbayes.models.ising.energy import to_backend
from varbayes.models.ising.noise import data_logits, validate_clean

NOISES = [Noise("gaussian", 1.3), Noise("flip", 0.2)]


def random_posterior(rng, H, W, scale=1.0):
    cp = make_couplings((rng.normal(size=(H, W - 1)), rng.normal(size=(H - 1, W))), (H, W))
    return Posterior(cp, LocalField(scale * rng.normal(size=(H, W)),
                                    scale * rng.normal(size=(H, W))))


def edges(H, W):
    """Every unordered neighbour pair once, with its coupling index."""
    for r, c in itertools.product(range(H), range(W)):
        if c + 1 < W:
            yield (r, c), (r, c + 1), ("h", r, c)
        if r + 1 < H:
            yield (r, c), (r + 1, c), ("v", r, c)


def coupling(post, key):
    kind, r, c = key
    return (post.couplings.horizontal if kind == "h" else post.couplings.vertical)[r, c]


def explicit_log_joint(z, post):
    H, W = z.shape
    total = sum(coupling(post, k) * z[a] * z[b] for a, b, k in edges(H, W))
    f = post.field
    return total + sum(f.plus[i] if z[i] > 0 else f.minus[i] for i in np.ndindex(H, W))


@pytest.mark.parametrize("shape", [(3, 4), (1, 5), (5, 1), (4, 4)])
def test_neighbor_sum_and_log_joint_match_explicit_loops(shape):
    rng = np.random.default_rng(sum(shape))
    post = random_posterior(rng, *shape)
    mu = rng.uniform(-1, 1, size=shape)
    expected = np.zeros(shape)
    for a, b, k in edges(*shape):
        expected[a] += coupling(post, k) * mu[b]
        expected[b] += coupling(post, k) * mu[a]
    np.testing.assert_allclose(neighbor_sum(mu, post.couplings), expected, atol=1e-12)
    z = np.where(rng.random(shape) < 0.5, 1.0, -1.0)
    assert log_joint(z, post) == pytest.approx(explicit_log_joint(z, post), abs=1e-10)


@pytest.mark.slow
def test_array_libraries_agree():
    rng = np.random.default_rng(1)
    post = random_posterior(rng, 4, 6)
    z = np.where(rng.random((3, 4, 6)) < 0.5, 1.0, -1.0)
    a = rng.normal(size=(2, 4, 6))
    ref_lj, ref_elbo = log_joint(z, post), elbo_from_logits(a, post)
    pt = to_backend(post, lambda x: torch.as_tensor(x.copy()))
    pj = to_backend(post, lambda x: jnp.asarray(x, dtype=jnp.float32))
    np.testing.assert_allclose(log_joint(torch.as_tensor(z), pt).numpy(), ref_lj, rtol=1e-12)
    np.testing.assert_allclose(elbo_from_logits(torch.as_tensor(a), pt).numpy(), ref_elbo,
                               rtol=1e-12)
    np.testing.assert_allclose(log_joint(jnp.asarray(z), pj), ref_lj, rtol=1e-5)
    np.testing.assert_allclose(elbo_from_logits(jnp.asarray(a), pj), ref_elbo, rtol=1e-5)


def test_elbo_equals_expectation_by_enumeration():
    """E_q[log p̃] + H(q), enumerated over all 2^6 configurations, on a 2x3 grid."""
    rng = np.random.default_rng(2)
    post = random_posterior(rng, 2, 3)
    mu = rng.uniform(-0.9, 0.9, size=(2, 3))
    total = 0.0
    for bits in itertools.product((-1.0, 1.0), repeat=6):
        z = np.array(bits).reshape(2, 3)
        q = np.prod((1 + z * mu) / 2)
        total += q * (log_joint(z, post) - np.log(q))
    assert elbo_from_mean(mu, post) == pytest.approx(total, abs=1e-10)
    assert elbo_from_logits(2 * np.arctanh(mu), post) == pytest.approx(total, abs=1e-10)


@pytest.mark.parametrize("noise", NOISES, ids=lambda n: n.kind)
def test_local_field_is_the_normalized_likelihood(noise):
    rng = np.random.default_rng(3)
    clean = np.where(rng.random((5, 6)) < 0.5, 1, -1)
    x = corrupt(clean, noise, rng)
    f = local_field(x, noise)
    if noise.kind == "gaussian":
        np.testing.assert_allclose(f.plus, norm.logpdf(x, 1, noise.scale))
        np.testing.assert_allclose(f.minus, norm.logpdf(x, -1, noise.scale))
    else:  # p(x | z) sums to one over x = ±1
        np.testing.assert_allclose(np.exp(f.plus) + np.exp(local_field(-x, noise).plus), 1.0)
    np.testing.assert_allclose(data_logits(x, noise), f.plus - f.minus, atol=1e-12)


def test_corrupt_flip_rate_and_seed():
    clean = np.ones((100, 100), dtype=np.int8)
    x = corrupt(clean, Noise("flip", 0.1), np.random.default_rng(0))
    assert 0.09 < pixel_error(x, clean) < 0.11
    again = corrupt(clean, Noise("flip", 0.1), np.random.default_rng(0))
    np.testing.assert_array_equal(x, again)


@pytest.mark.parametrize("bad, match", [
    (lambda: validate_clean(np.array([[0, 1], [1, 1]])), "binary"),
    (lambda: corrupt(np.ones((2, 2)), Noise("gaussian", 0.0), np.random.default_rng()),
     "sigma"),
    (lambda: corrupt(np.ones((2, 2)), Noise("gaussian", -1.0), np.random.default_rng()),
     "sigma"),
    (lambda: corrupt(np.ones((2, 2)), Noise("flip", 0.5), np.random.default_rng()),
     "flip-prob"),
    (lambda: corrupt(np.ones((2, 2)), Noise("flip", 0.0), np.random.default_rng()),
     "flip-prob"),
    (lambda: local_field(np.array([[0.0, np.nan]]), Noise("gaussian", 1.0)), "NaN"),
    (lambda: local_field(np.array([[0.0, np.inf]]), Noise("gaussian", 1.0)), "NaN"),
    (lambda: local_field(np.array([[0.3, 1.0]]), Noise("flip", 0.1)), "±1"),
    (lambda: make_couplings((np.zeros((2, 3)), np.zeros((1, 3))), (2, 3)), "shapes"),
    (lambda: make_couplings(float("nan"), (2, 3)), "finite"),
])
def test_bad_input_raises_one_clear_error(bad, match):
    with pytest.raises(VarbayesError, match=match):
        bad()


# ------------------------------------------------------------------ Pyro / NumPyro parity


def pyro_log_density(fn, z, observed, couplings, noise):
    from pyro import poutine

    data = {} if z is None else {"z": torch.as_tensor(z)}
    tr = poutine.trace(poutine.condition(fn, data=data)).get_trace(
        torch.as_tensor(observed), couplings, noise)
    sites = [n for n in tr.nodes if n not in ("_INPUT", "_RETURN")]
    return float(tr.log_prob_sum().detach()), sites


def numpyro_log_density(fn, z, observed, couplings, noise, params=None):
    from numpyro import handlers
    from numpyro.infer.util import log_density

    data = {} if z is None else {"z": jnp.asarray(z)}
    ld, tr = log_density(handlers.seed(fn, 0), (jnp.asarray(observed), couplings, noise), {},
                         {**data, **(params or {})})
    return float(ld), list(tr)


@pytest.mark.slow
@pytest.mark.parametrize("noise", NOISES, ids=lambda n: n.kind)
def test_pyro_and_numpyro_log_densities_agree(noise):
    from varbayes.models.ising import numpyro_model, pyro_model

    rng = np.random.default_rng(4)
    clean = np.where(rng.random((4, 5)) < 0.5, 1, -1)
    x = corrupt(clean, noise, rng)
    post = make_posterior(x, noise, (rng.normal(size=(4, 4)), rng.normal(size=(3, 5))))
    pt = to_backend(post, lambda a: torch.as_tensor(a.copy()))
    pj = to_backend(post, lambda a: jnp.asarray(a, dtype=jnp.float32))
    for _ in range(3):
        z = np.where(rng.random((4, 5)) < 0.5, 1.0, -1.0)
        lp_pyro, sites_pyro = pyro_log_density(pyro_model.model, z, x, pt.couplings, noise)
        lp_np, sites_np = numpyro_log_density(numpyro_model.model, z, x, pj.couplings, noise)
        assert lp_pyro == pytest.approx(float(log_joint(z, post)), abs=1e-9)
        assert lp_np == pytest.approx(lp_pyro, rel=1e-5)
        assert sites_pyro == sites_np == ["z", "coupling", "x"]


@pytest.mark.slow
def test_guides_agree_and_start_from_the_data():
    import pyro

    from varbayes.models.ising import numpyro_model, pyro_model

    rng = np.random.default_rng(5)
    noise = Noise("gaussian", 1.5)
    x = corrupt(np.ones((3, 4), dtype=np.int8), noise, rng)
    post = make_posterior(x, noise, 0.7)
    pt = to_backend(post, lambda a: torch.as_tensor(a.copy()))
    pj = to_backend(post, jnp.asarray)
    pyro.clear_param_store()
    z = np.where(rng.random((3, 4)) < 0.5, 1.0, -1.0)
    lq_pyro, sites_pyro = pyro_log_density(pyro_model.guide, z, x, pt.couplings, noise)
    lq_np, sites_np = numpyro_log_density(numpyro_model.guide, z, x, pj.couplings, noise)
    logits = 2 * post.field.h
    expected = float(np.sum(-np.logaddexp(0, -z * logits)))  # log sigmoid(z a)
    assert lq_pyro == pytest.approx(expected, abs=1e-9)
    assert lq_np == pytest.approx(expected, rel=1e-5)
    assert sites_pyro == sites_np == ["logits", "z"]
    np.testing.assert_allclose(pyro.param("logits").detach().numpy(), logits, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_spin_distribution_is_normalized_and_samples_its_mean(backend):
    a = np.array([-2.0, 0.0, 0.7, 3.0])
    if backend == "pyro":
        from varbayes.models.ising.pyro_model import Spin

        d = Spin(torch.as_tensor(a))
        lp = [d.log_prob(torch.full((4,), v)).numpy() for v in (-1.0, 1.0)]
        s = d.sample((20000,)).numpy()
    else:
        import jax

        from varbayes.models.ising.numpyro_model import Spin

        d = Spin(jnp.asarray(a))
        lp = [np.asarray(d.log_prob(jnp.full((4,), v))) for v in (-1.0, 1.0)]
        s = np.asarray(d.sample(jax.random.key(0), (20000,)))
    np.testing.assert_allclose(np.exp(lp[0]) + np.exp(lp[1]), 1.0, rtol=1e-6)
    assert set(np.unique(s)) <= {-1.0, 1.0}
    np.testing.assert_allclose(s.mean(0), np.tanh(a / 2), atol=0.03)
    np.testing.assert_allclose(np.asarray(d.mean), np.tanh(a / 2), rtol=1e-6)


def test_backends_expose_the_same_names_and_signatures():
    import inspect

    from varbayes.models.ising import numpyro_model, pyro_model

    for name in ("model", "guide", "likelihood", "local_field", "Spin"):
        a, b = getattr(pyro_model, name), getattr(numpyro_model, name)
        params = [p.name for p in inspect.signature(a).parameters.values()]
        assert params == [p.name for p in inspect.signature(b).parameters.values()], name

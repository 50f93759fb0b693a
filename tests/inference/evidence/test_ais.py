"""AIS and BDMC against PPCA's closed-form log p(x), in both backends."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.evidence import ais
from varbayes.inference.evidence.annealing import log_mean_exp_stderr
from varbayes.models.errors import VarbayesError
from varbayes.models.ppca import exact_log_evidence, random_ppca, simulate


def test_schedules():
    for kind in ais.SCHEDULES:
        b = ais.schedule(50, kind)
        assert b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0) and len(b) == 51
    lin, sig = ais.schedule(50, "linear"), ais.schedule(50, "sigmoid")
    assert sig[1] < lin[1] and np.diff(sig)[25] > np.diff(lin)[25]  # denser at the ends
    np.testing.assert_array_equal(ais.schedule(1, "sigmoid"), [0.0, 1.0])


@pytest.mark.parametrize("bad, match", [
    ({"n_steps": 0}, "n_steps >= 1"), ({"chains": 0}, "chains >= 1"),
    ({"schedule": "cosine"}, "schedule must be one of linear, sigmoid"),
    ({"init": "posterior"}, "init must be one of prior, guide"),
    ({"step_size": 0.0}, "step_size must be > 0"), ({"target_accept": 1.0}, "(0, 1)"),
])
def test_bad_options(bad, match):
    with pytest.raises(VarbayesError, match=match):
        ais.check_options(ais.AISOptions()._replace(**bad))


def test_log_mean_exp_stderr():
    log_w = np.log(np.array([[1.0, 2.0], [3.0, 2.0]]))
    est, se = log_mean_exp_stderr(log_w)
    np.testing.assert_allclose(est, np.log([2.0, 2.0]))
    np.testing.assert_allclose(se, [np.std([1, 3], ddof=1) / (np.sqrt(2) * 2), 0.0])


@pytest.fixture(scope="module")
def ppca():
    p = random_ppca(D=6, K=2, sigma=0.5, seed=0, guide_scale=1.5)
    x, z = simulate(p, 48, seed=1)
    return p, x, z, exact_log_evidence(p, x)


def _numpyro(p, x, z=None, **kw):
    import jax.numpy as jnp

    from varbayes.models.ppca import numpyro_model as m

    o = ais.AISOptions(chains=8, **kw)
    return ais.ais(m.model, m.guide, [((p, jnp.asarray(x, jnp.float32)), {})], o,
                   backend="numpyro", posterior=None if z is None else [z])


@pytest.mark.slow
def test_bdmc_sandwiches_the_exact_evidence(ppca):
    """Forward AIS <= log p(x) <= reverse AIS within MC error; the gap closes with T."""
    p, x, z, exact = ppca
    gaps = []
    for T in (5, 200):
        lo, hi = _numpyro(p, x, n_steps=T), _numpyro(p, x, z, n_steps=T)
        se = 3 * np.std(lo.log_px - exact) / np.sqrt(len(x))
        assert lo.log_px.mean() <= exact.mean() + se + 1e-3
        assert hi.log_px.mean() >= exact.mean() - 3 * np.std(hi.log_px - exact) / np.sqrt(
            len(x)) - 1e-3
        gaps.append(hi.log_px.mean() - lo.log_px.mean())
    assert gaps[0] > 0.2 and gaps[1] < 0.1 and gaps[1] < gaps[0] / 4
    assert abs(lo.log_px.mean() - exact.mean()) < 0.05
    assert 0.4 < lo.accept.mean() < 0.95  # step sizes adapted toward 0.65


@pytest.mark.slow
def test_pyro_agrees_with_numpyro(ppca):
    import torch

    from varbayes.models.ppca import pyro_model as pm

    p, x, _, exact = ppca
    x = x[:24]
    a = _numpyro(p, x, n_steps=30, init="guide")
    b = ais.ais(pm.model, pm.guide, [((p, torch.as_tensor(x, dtype=torch.float32)), {})],
                ais.AISOptions(n_steps=30, chains=8, init="guide"), backend="pyro")
    diff = a.log_px - b.log_px  # independent runs on the same data: MC noise only
    assert abs(diff.mean()) < 3 * diff.std(ddof=1) / np.sqrt(len(diff)) + 0.01
    for r in (a, b):
        assert r.log_px.mean() < exact[:24].mean() + 0.05  # a lower bound, up to MC noise
        assert abs(r.log_px.mean() - exact[:24].mean()) < 0.1
    assert b.accept.shape == (29,) and 0.4 < b.accept.mean() < 0.95


def test_global_and_discrete_latents_are_refused():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    x = jnp.zeros((4, 2))

    def global_model(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", 4):
            numpyro.sample("x", dist.Normal(mu, 1.0).expand([4, 2]).to_event(1), obs=x)

    def discrete_model(x):
        with numpyro.plate("data", 4):
            k = numpyro.sample("k", dist.Bernoulli(0.5 * jnp.ones(4)))
            numpyro.sample("x", dist.Normal(k[..., None], 1.0).expand([4, 2]).to_event(1),
                           obs=x)

    for model, match in ((global_model, r"'mu' is in no plate.*pass plate=None"),
                         (discrete_model, "'k' is a discrete latent")):
        with pytest.raises(VarbayesError, match=match):
            ais.ais(model, model, [((x,), {})], ais.AISOptions(n_steps=2, chains=1))


def _gaussians(xp):
    """log p₀ = N(0, I) and an unnormalised log p(x, z) = log N(z; 1, 0.5² I) + 2, over
    z (C, M, d)."""
    def log_p0(z):
        return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * np.log(2 * np.pi)

    def log_joint(z):
        return (-0.5 * (((z - 1.0) / 0.5) ** 2).sum(-1)
                - z.shape[-1] * (np.log(0.5) + 0.5 * np.log(2 * np.pi)) + 2.0)
    return log_p0, log_joint


def test_the_carried_point_is_the_densities_at_the_chains_z():
    """Each chain carries its densities and gradients between transitions: after a run they
    must be those at its final z, and the log weights those of the exact evidence (2)."""
    import jax
    import jax.numpy as jnp

    from varbayes.inference.evidence import ais_jax
    from varbayes.inference.evidence.annealing import AISOptions, path_betas

    log_p0, log_joint = _gaussians(jnp)
    o = AISOptions(n_steps=200, chains=256, n_leapfrog=3)
    z0 = jax.random.normal(jax.random.key(0), (256, 3, 2))
    state, info = ais_jax.run(jax.random.key(1), z0, path_betas(o, False), log_p0, log_joint,
                              o)
    fresh = ais_jax.evaluate(state.z, log_p0, log_joint)
    for name, got, want in zip(fresh._fields, state.at, fresh, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    assert float(info.accept.mean()) > 0.3
    lw = np.asarray(state.log_w)
    est = np.log(np.exp(lw - lw.max(0)).mean(0)) + lw.max(0)
    np.testing.assert_allclose(est, 2.0, atol=0.1)


def test_pyro_pilot_and_estimating_chains_get_densities_of_their_own_size():
    """The torch twin builds the densities for the 4 pilot chains and for the C estimating
    chains separately (no padding), and takes a p₀ that does not depend on z."""
    import torch

    from varbayes.inference.evidence import ais_pyro
    from varbayes.inference.evidence.annealing import PILOT_CHAINS, AISOptions, path_betas

    log_p0, log_joint = _gaussians(torch)
    sizes = []

    def densities(c):
        sizes.append(c)

        def sized(f):
            def g(z):
                assert z.shape[0] == c, (z.shape, c)
                return f(z)
            return g
        return sized(log_p0), sized(log_joint)

    torch.manual_seed(0)
    o = AISOptions(n_steps=200, chains=256, n_leapfrog=3)
    z0 = torch.randn(256 + PILOT_CHAINS, 3, 2)
    log_w, accept = ais_pyro.adapted_run(z0, path_betas(o, False), densities, o)
    assert sizes == [PILOT_CHAINS, 256] and log_w.shape == (256, 3)
    assert float(accept.mean()) > 0.3
    np.testing.assert_allclose(torch.logsumexp(log_w, 0).numpy() - np.log(256), 2.0, atol=0.1)

    flat, _ = ais_pyro.run(z0, path_betas(o, False), lambda z: torch.zeros(z.shape[:2]),
                           log_joint, o)[:2]
    assert torch.isfinite(flat).all()

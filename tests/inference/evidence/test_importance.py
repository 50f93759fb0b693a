"""Evidence estimators against PPCA's closed-form log p(x), in both backends."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.evidence import importance as evidence
from varbayes.models.errors import VarbayesError
from varbayes.models.ppca import exact_log_evidence, random_ppca, simulate


def _backend(name):
    if name == "numpyro":
        import jax.numpy as jnp

        from varbayes.models.ppca import numpyro_model as m

        return m, lambda a: jnp.asarray(a, dtype=jnp.float32)
    import torch

    from varbayes.models.ppca import pyro_model as m

    return m, lambda a: torch.as_tensor(a, dtype=torch.float32)


def _is(name, p, x, k, seed=0, chunk=64):
    m, arr = _backend(name)
    batches = [((p, arr(x[i:i + 16])), {}) for i in range(0, len(x), 16)]
    return evidence.importance_sampling(m.model, m.guide, batches, k, backend=name,
                                        seed=seed, chunk=chunk)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_exact_guide_gives_exact_evidence(backend):
    p = random_ppca(D=6, K=2, sigma=0.5)
    x, _ = simulate(p, 40)
    res = _is(backend, p, x, k=8)
    exact = exact_log_evidence(p, x)
    np.testing.assert_allclose(res.log_px, exact, atol=2e-3)  # float32 arithmetic
    np.testing.assert_allclose(res.elbo, exact, atol=2e-3)
    np.testing.assert_allclose(res.ess, 8, rtol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_wide_guide_bound_tightens_with_k(backend):
    p = random_ppca(D=6, K=2, sigma=0.5, guide_scale=2.0)
    x, _ = simulate(p, 48, seed=1)
    exact = exact_log_evidence(p, x).mean()
    r1, r10, r1000 = (_is(backend, p, x, k=k, seed=2) for k in (1, 10, 1000))
    # a mean of IS estimates is below log p(x) and rises with K (Burda et al. 2016, Thm 1)
    assert r1.log_px.mean() < r10.log_px.mean() < r1000.log_px.mean() < exact + 0.02
    assert abs(r1000.log_px.mean() - exact) < 0.05
    assert r1000.elbo.mean() < r1000.log_px.mean()
    np.testing.assert_allclose(r1.log_px, r1.elbo)  # K = 1 is the ELBO
    assert np.all(r1000.khat < 0.7) and np.all(r1000.ess < 1000)


@pytest.mark.slow
def test_backends_agree_on_the_same_parameters():
    p = random_ppca(D=5, K=2, sigma=0.7, guide_scale=1.5, seed=3)
    x, _ = simulate(p, 32, seed=4)
    a, b = _is("numpyro", p, x, k=2000), _is("pyro", p, x, k=2000)
    assert abs(a.log_px.mean() - b.log_px.mean()) < 0.01
    assert abs(a.elbo.mean() - b.elbo.mean()) < 4 * np.hypot(a.elbo_stderr, b.elbo_stderr).mean()


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_global_and_discrete_latents_are_refused(backend):
    if backend == "numpyro":
        import jax.numpy as jnp
        import numpyro as ppl
        import numpyro.distributions as dist

        arr = jnp.asarray
    else:
        import pyro as ppl
        import pyro.distributions as dist
        import torch

        arr = torch.as_tensor
    x = arr(np.zeros((4, 2), dtype=np.float32))

    def global_model(x):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        with ppl.plate("data", 4):
            ppl.sample("x", dist.Normal(mu, 1.0).expand([4, 2]).to_event(1), obs=x)

    def global_guide(x):
        ppl.sample("mu", dist.Normal(0.0, 1.0))

    def discrete_model(x):
        with ppl.plate("data", 4):
            k = ppl.sample("k", dist.Bernoulli(0.5 * arr(np.ones(4, np.float32))))
            ppl.sample("x", dist.Normal(k[..., None] * 1.0, 1.0).expand([4, 2]).to_event(1),
                       obs=x)

    def discrete_guide(x):
        with ppl.plate("data", 4):
            ppl.sample("k", dist.Bernoulli(0.5 * arr(np.ones(4, np.float32))))

    with pytest.raises(VarbayesError, match=r"latent site 'mu' is in no plate.*pass plate=None"):
        evidence.importance_sampling(global_model, global_guide, [((x,), {})], 4,
                                     backend=backend)
    with pytest.raises(VarbayesError, match="'k' is a discrete latent"):
        evidence.importance_sampling(discrete_model, discrete_guide, [((x,), {})], 4,
                                     backend=backend)
    with pytest.raises(VarbayesError, match="k must be >= 1, got 0"):
        evidence.importance_sampling(global_model, global_guide, [((x,), {})], 0,
                                     backend=backend)


def test_estimators_on_log_weights():
    rng = np.random.default_rng(0)
    log_w = rng.normal(size=(1000, 3))
    np.testing.assert_allclose(evidence.log_mean_exp(log_w),
                               np.log(np.exp(log_w).mean(0)))
    w = np.exp(log_w)
    np.testing.assert_allclose(evidence.effective_sample_size(log_w),
                               w.sum(0) ** 2 / (w**2).sum(0))
    heavy = np.log(rng.pareto(0.5, size=(2000, 1)) + 1)  # infinite-variance weights
    assert evidence.pareto_k(heavy)[0] > 0.7 > evidence.pareto_k(log_w).max()


@pytest.mark.slow
def test_numpyro_chunks_run_in_one_call_with_the_per_chunk_keys():
    """The compiled loop over a batch's chunks draws with chunk c of batch b the key
    fold_in(fold_in(key(seed), b), c), the remainder chunk included: the log weights are
    those of one call per chunk."""
    import jax

    m, arr = _backend("numpyro")
    p = random_ppca(D=3, K=2, sigma=0.5)
    x = arr(simulate(p, 12)[0])
    draw = evidence._numpyro_draws(m.model, m.guide, "data", seed=5)
    got = draw(1, 23, 5, (p, x), {})  # 4 full chunks of 5 and one of 3
    key = jax.random.fold_in(jax.random.key(5), 1)
    want = np.concatenate([
        np.asarray(evidence.numpyro_log_weights(m.model, m.guide, jax.random.fold_in(key, c),
                                                min(5, 23 - 5 * c), p, x))
        for c in range(5)])
    assert got.shape == (23, 12) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_auto_chunk_from_the_batch_size():
    x = np.zeros((100, 784), np.float32)
    assert evidence.auto_chunk(5000, ((x,), {})) == evidence.CHUNK_FLOATS // (100 * 784)
    assert evidence.auto_chunk(20, ((x,), {})) == 20  # never more than K
    assert evidence.auto_chunk(5000, ((np.zeros((10**6, 10**3)),), {})) == 1
    p = random_ppca(D=3, K=2, sigma=0.5)
    with pytest.raises(VarbayesError, match="chunk must be >= 1, got 0"):
        _is("numpyro", p, simulate(p, 4)[0], 10, chunk=0)

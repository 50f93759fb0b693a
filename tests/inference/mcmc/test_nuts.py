"""NUTS in both backends against closed-form posteriors, within Monte-Carlo error."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.mcmc import nuts as mcmc
from varbayes.models.errors import VarbayesError

RNG = np.random.default_rng(1)
Y = RNG.normal(1.5, 2.0, size=20)  # normal-normal data
X = RNG.normal(size=(30, 2))  # linear-regression design
W_TRUE = np.array([0.7, -1.2])
T = X @ W_TRUE + RNG.normal(0, 0.5, size=30)
COV = np.array([[1.0, 0.8], [0.8, 1.0]])
M0, S0, S, ALPHA, SIGMA = 0.0, 3.0, 2.0, 1.0, 0.5


def _api(backend):
    if backend == "numpyro":
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        return numpyro, dist, jnp.asarray
    import pyro
    import pyro.distributions as dist
    import torch

    return pyro, dist, lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)


def models(backend):
    """(model, args, exact posterior mean, exact posterior sd, site) per known case."""
    ppl, dist, arr = _api(backend)

    def normal_normal(y):
        mu = ppl.sample("mu", dist.Normal(M0, S0))
        with ppl.plate("data", y.shape[0]):
            ppl.sample("y", dist.Normal(mu, S), obs=y)

    prec = 1 / S0**2 + len(Y) / S**2
    nn = (normal_normal, (arr(Y),), np.array([(M0 / S0**2 + Y.sum() / S**2) / prec]),
          np.array([prec**-0.5]), "mu")

    def correlated():
        ppl.sample("z", dist.MultivariateNormal(arr(np.zeros(2)), covariance_matrix=arr(COV)))

    cg = (correlated, (), np.zeros(2), np.ones(2), "z")

    def regression(x, t):
        w = ppl.sample("w", dist.Normal(arr(np.zeros(2)), ALPHA**-0.5).to_event(1))
        with ppl.plate("data", x.shape[0]):
            ppl.sample("t", dist.Normal((x * w).sum(-1), SIGMA), obs=t)

    cov = np.linalg.inv(ALPHA * np.eye(2) + X.T @ X / SIGMA**2)
    lr = (regression, (arr(X), arr(T)), cov @ X.T @ T / SIGMA**2, np.sqrt(np.diag(cov)), "w")
    return {"normal-normal": nn, "correlated-gaussian": cg, "linear-regression": lr}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("case", ["normal-normal", "correlated-gaussian", "linear-regression"])
def test_nuts_matches_closed_form(backend, case):
    import arviz as az

    model, args, mean, sd, site = models(backend)[case]
    n = 600 if backend == "numpyro" else 300
    idata = mcmc.nuts(model, *args, backend=backend, num_chains=2, num_warmup=n,
                      num_samples=n, seed=3, progress_bar=False)
    draws = idata.posterior[site].values.reshape(2 * n, -1)
    ess = az.ess(idata, var_names=[site])[site].values.reshape(-1)
    rhat = az.rhat(idata, var_names=[site])[site].values.reshape(-1)
    assert np.all(ess > 100) and np.all(rhat < 1.05), (ess, rhat)
    mc_err = sd / np.sqrt(ess)
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 4 * mc_err)
    np.testing.assert_array_less(np.abs(draws.std(0) / sd - 1), 4 / np.sqrt(2 * ess) + 0.02)
    # this process sees one JAX device: the chains run one after the other
    assert mcmc.chain_metrics(idata) == {"chain_method": "sequential", "devices": 1}
    stats = idata.sample_stats
    for key in ("diverging", "tree_depth", "step_size", "energy"):
        assert stats[key].shape == (2, n), key
    assert int(stats["diverging"].sum()) == 0
    assert 1 <= int(stats["tree_depth"].max()) <= 10
    if case != "correlated-gaussian":  # the only case with observations
        obs = "y" if case == "normal-normal" else "t"
        assert idata.log_likelihood[obs].shape == (2, n, len(args[-1]))
        assert "observed_data" in idata.groups()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_discrete_latents_and_bad_arguments_are_refused(backend):
    ppl, dist, arr = _api(backend)

    def mixture():
        k = ppl.sample("k", dist.Bernoulli(0.3))
        ppl.sample("x", dist.Normal(k * 1.0, 1.0), obs=arr(0.5))

    with pytest.raises(VarbayesError, match=r"site\(s\) k are discrete.*Gibbs"):
        mcmc.nuts(mixture, backend=backend, num_chains=1, num_samples=5, num_warmup=5)
    with pytest.raises(VarbayesError, match="num_samples must be >= 1, got 0"):
        mcmc.nuts(mixture, backend=backend, num_samples=0)
    with pytest.raises(VarbayesError, match="backend must be"):
        mcmc.nuts(mixture, backend="stan")


@pytest.mark.slow
def test_init_from_values_starts_there():
    model, args, *_ = models("numpyro")["normal-normal"]
    idata = mcmc.nuts(model, *args, num_chains=1, num_warmup=0, num_samples=1,
                      init={"mu": 123.0}, progress_bar=False, max_tree_depth=1)
    assert abs(float(idata.posterior["mu"].values[0, 0]) - 123.0) < 10


#: Run with 2 forced host devices: NUTS on the normal-normal model with 2 chains, counting
#: NumPyro's pmap calls; prints JSON.
PARALLEL = """
import json, sys
import numpy as np
import numpyro.infer.mcmc as nm
sys.path.insert(0, sys.argv[1])
from test_nuts import Y, models
from varbayes.inference.mcmc.nuts import chain_metrics, nuts

calls = []
pmap = nm.pmap
nm.pmap = lambda f, *a, **k: calls.append(1) or pmap(f, *a, **k)
model, args, mean, sd, site = models("numpyro")["normal-normal"]
idata = nuts(model, *args, num_chains=2, num_warmup=300, num_samples=400, seed=3,
             progress_bar=False, predictive=False)
draws = idata.posterior[site].values
print(json.dumps({**chain_metrics(idata), "pmap_calls": len(calls),
                  "shape": list(draws.shape), "mean": float(draws.mean()),
                  "sd": float(draws.std()), "exact_mean": float(mean[0]),
                  "exact_sd": float(sd[0])}))
"""


@pytest.mark.slow
def test_parallel_chains_run_one_per_device():
    """With 2 host devices and 2 chains NumPyro's "parallel" really runs (one pmap) and the
    posterior is right. (NumPyro does not promise the draws of "sequential" for the same
    seed, though both run the same per-chain function on the same keys.)"""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, "-c", PARALLEL, str(Path(__file__).parent)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert (got["chain_method"], got["devices"], got["pmap_calls"]) == ("parallel", 2, 1)
    assert got["shape"] == [2, 400]
    assert abs(got["mean"] - got["exact_mean"]) < 4 * got["exact_sd"] / np.sqrt(200)
    assert abs(got["sd"] / got["exact_sd"] - 1) < 0.15

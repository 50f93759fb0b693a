"""NUTS effective samples per second: NumPyro against Pyro on the same model, same run.

The model is Bayesian logistic regression (N=1000 synthetic points, D=8, N(0, 1) prior),
sampled through :func:`varbayes.inference.mcmc.nuts.nuts` in each backend. Compile time is measured
separately, as the wall time of a run with one warmup step and one draw (after one such
run to start the runtimes), and taken out of the sampling time.
"""

from __future__ import annotations

import time

import numpy as np

from varbayes.inference.backends import BACKENDS


def _data(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ w))).astype(np.float32)
    return x, y


def _model(backend: str):
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

    def model(x, y):
        w = ppl.sample("w", dist.Normal(arr(np.zeros(x.shape[1], np.float32)), 1.0).to_event(1))
        with ppl.plate("data", x.shape[0]):
            ppl.sample("y", dist.Bernoulli(logits=(x * w).sum(-1)), obs=y)

    return model, arr


def run(quick: bool) -> dict[str, float]:
    """ESS/s (min bulk ESS over the weights / sampling seconds, compile time taken out)."""
    import arviz as az

    from varbayes.inference.mcmc.nuts import nuts

    x, y = _data(200 if quick else 1000, 8)
    n = 100 if quick else 500
    metrics: dict[str, float] = {}
    for backend in BACKENDS:
        model, arr = _model(backend)
        args = (arr(x), arr(y))
        tiny = dict(backend=backend, num_chains=1, num_warmup=1, num_samples=1,
                    progress_bar=False)
        nuts(model, *args, **tiny)  # runtime start-up (JAX backend, torch JIT), not counted
        t0 = time.perf_counter()
        nuts(model, *args, **tiny)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        idata = nuts(model, *args, backend=backend, num_chains=2, num_warmup=n, num_samples=n,
                     seed=1, progress_bar=False)
        total = time.perf_counter() - t0
        # NumPyro compiles once per call (sequential chains reuse it); Pyro once per chain.
        n_compiles = 1 if backend == "numpyro" else 2
        sampling = max(total - n_compiles * compile_s, 1e-9)
        ess = float(az.ess(idata, var_names=["w"])["w"].min())
        metrics[f"{backend}_compile_seconds"] = compile_s
        metrics[f"{backend}_total_seconds"] = total
        metrics[f"{backend}_sampling_seconds"] = sampling
        metrics[f"{backend}_min_ess_bulk"] = ess
        metrics[f"{backend}_ess_per_second"] = ess / sampling
        metrics[f"{backend}_mean_tree_depth"] = float(idata.sample_stats["tree_depth"].mean())
    metrics["numpyro_over_pyro_ess_per_second"] = (metrics["numpyro_ess_per_second"]
                                                   / metrics["pyro_ess_per_second"])
    return metrics

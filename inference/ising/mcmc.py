"""Ising posterior draws as arviz InferenceData: Gibbs chains, exact checks, coupling choice.

NUTS cannot sample ±1 spins, and NumPyro's ``DiscreteHMCGibbs`` needs continuous sites to
wrap and enumerates a site's whole support (our ``Spin`` support is the integer interval
[-1, 1], which holds 0), so the route here is our checkerboard sampler
(:func:`.gibbs.step`), with every draw kept:

* ``posterior["z"]`` (chain, draw, H, W): the spins;
* ``log_likelihood["x"]`` (chain, draw, H, W): log p(x_ij | z_ij) = ℓ_ij(z_ij) per pixel, in
  nats, so PSIS-LOO estimates log p(x_ij | x_−ij) for each held-out noisy pixel: how well a
  coupling's prior predicts a pixel from the rest of the image (the model comparison of
  :func:`compare_couplings`);
* ``observed_data["x"]`` when the observation is given.

Small grids have exact marginals (:mod:`varbayes.models.ising.exact`) to test against.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from varbayes.inference.ising import gibbs
from varbayes.models.errors import check
from varbayes.models.ising.energy import Posterior, to_backend


@functools.partial(jax.jit, static_argnames=("num_samples", "burn_in", "num_chains", "thin"))
def _draws(key, post, num_samples, burn_in, num_chains, thin):
    k0, k1 = jax.random.split(key)
    state = gibbs.init(k0, post, num_chains)

    def sweep(state, k):
        return gibbs.step(k, state, post)[0], None

    def keep(state, k):
        state, _ = jax.lax.scan(sweep, state, jax.random.split(k, thin))
        return state, state.z

    kb, ks = jax.random.split(k1)
    state, _ = jax.lax.scan(sweep, state, jax.random.split(kb, max(burn_in, 1)))
    _, z = jax.lax.scan(keep, state, jax.random.split(ks, num_samples))
    return jnp.swapaxes(z, 0, 1)  # (C, S, H, W)


def sample(key: jax.Array, post: Posterior, *, num_samples: int = 1000, burn_in: int = 100,
           num_chains: int = 4, thin: int = 1, observed: np.ndarray | None = None):
    """Checkerboard Gibbs draws of p(z | x) as InferenceData (see the module doc).

    Parameters
    ----------
    key : JAX PRNG key (the only randomness).
    post : the posterior (numpy arrays; computed in float32).
    num_samples : draws kept per chain, after ``burn_in`` sweeps; one draw every ``thin``.
    observed : the noisy image (H, W), stored as ``observed_data``.
    """
    import arviz as az

    check(num_samples >= 1, f"num_samples must be >= 1, got {num_samples}")
    check(burn_in >= 0 and num_chains >= 1 and thin >= 1,
          f"burn_in >= 0, num_chains >= 1 and thin >= 1 needed, got {burn_in}, {num_chains}, "
          f"{thin}")
    post_j = to_backend(post, lambda a: jnp.asarray(a, dtype=jnp.float32))
    z = np.asarray(_draws(key, post_j, int(num_samples), int(burn_in), int(num_chains),
                          int(thin)), dtype=np.int8)
    f = post.field
    loglik = np.where(z > 0, np.asarray(f.plus), np.asarray(f.minus))
    kw: dict[str, Any] = {"posterior": {"z": z}, "log_likelihood": {"x": loglik}}
    if observed is not None:
        kw["observed_data"] = {"x": np.asarray(observed)}
    return az.from_dict(**kw)


def marginal_means(idata: Any) -> tuple[np.ndarray, np.ndarray]:
    """E[z_ij] (H, W) over all draws, and its Monte-Carlo standard error from bulk ESS."""
    import arviz as az

    z = np.asarray(idata.posterior["z"].values, dtype=np.float64)
    mean = z.mean(axis=(0, 1))
    sd = z.std(axis=(0, 1))
    ess = np.asarray(az.ess(idata, var_names=["z"])["z"].values, dtype=np.float64)
    ess = np.where(np.isfinite(ess) & (ess > 0), ess, z.shape[0] * z.shape[1])
    return mean, sd / np.sqrt(ess)


def compare_couplings(key: jax.Array, observed: np.ndarray, noise: Any,
                      couplings: Mapping[str, float], **kwargs: Any) -> dict[str, Any]:
    """Gibbs InferenceData per coupling variant (name -> J) for PSIS-LOO / WAIC comparison.

    Pass the result to :func:`varbayes.inference.workflow.diagnostics.compare`; ``kwargs`` go
    to :func:`sample`.
    """
    from varbayes.models.ising.noise import make_posterior

    check(len(couplings) >= 1, "give at least one coupling variant")
    return {name: sample(jax.random.fold_in(key, i), make_posterior(observed, noise, J),
                         observed=observed, **kwargs)
            for i, (name, J) in enumerate(couplings.items())}


def is_loo(idata: Any) -> tuple[float, float, np.ndarray]:
    """Leave-one-pixel-out by plain importance sampling: elpd (nats), its se, pointwise (H, W).

    p(x_ij | x_−ij) ≈ 1 / mean_s[1 / p(x_ij | z_ij^s)] over posterior draws. Each pixel's
    log-likelihood takes only two values (z_ij = ±1), so the importance ratios are bounded
    (by (1 − p)/p for flip noise) and need no smoothing; PSIS cannot fit a Pareto tail to two
    distinct values and reports k̂ = ∞, a false alarm here.
    """
    from scipy.special import logsumexp

    ll = np.asarray(idata.log_likelihood["x"].values, dtype=np.float64)
    flat = ll.reshape(-1, *ll.shape[2:])  # (S, H, W)
    point = -(logsumexp(-flat, axis=0) - np.log(flat.shape[0]))
    n = point.size
    return float(point.sum()), float(np.sqrt(n * point.var())), point

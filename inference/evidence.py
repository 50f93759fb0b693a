"""Marginal-likelihood estimators for any model+guide pair with per-datapoint continuous
latents, in NumPyro or Pyro.

The model and guide take the data of ``M`` datapoints and put each datapoint's latents and
observations under one plate (``plate``, default ``"data"``). Per datapoint i,

    log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i),   z_ik ~ q(z | x_i),  k = 1..K,

and the estimators are pure functions of these log weights:

* importance sampling (the IWAE bound): log p̂(x_i) = logsumexp_k log w_ik - log K, a
  stochastic lower bound whose expectation rises with K; at K = 1 it is the ELBO;
* the ELBO: the mean over k of log w_ik;
* the effective sample size (Σw)²/Σw² and the PSIS Pareto k̂ per datapoint.

Sites outside the plate: a ``factor`` (e.g. a prior on network weights for MAP training)
is a term on the parameters, not on x, and is left out; a latent sample site outside the
plate is a *global* latent and is refused, since p(x_i) no longer factorizes over i.
All log-likelihoods are in nats.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.special import logsumexp

from inference.errors import VarbayesError, check

Batch = tuple[tuple[Any, ...], dict[str, Any]]


# ------------------------------------------------------------ estimators on log weights

def log_mean_exp(log_w: np.ndarray, axis: int = 0) -> np.ndarray:
    """log (1/K) Σ_k exp(log_w_k) along ``axis``, computed stably."""
    return logsumexp(log_w, axis=axis) - math.log(log_w.shape[axis])


def effective_sample_size(log_w: np.ndarray) -> np.ndarray:
    """(Σ_k w_k)² / Σ_k w_k² per column of ``log_w`` (K, M): between 1 and K."""
    w = np.exp(log_w - log_w.max(axis=0, keepdims=True))
    return w.sum(0) ** 2 / (w**2).sum(0)


def pareto_k(log_w: np.ndarray) -> np.ndarray:
    """PSIS Pareto shape k̂ per column of ``log_w`` (K, M); above 0.7 the IS estimate is
    unreliable (Vehtari et al. 2015, through ``arviz.psislw``)."""
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k = az.psislw(np.asarray(log_w, dtype=np.float64).T.copy())
    return np.asarray(k, dtype=np.float64)


class ISResult(NamedTuple):
    """Importance-sampling estimates per datapoint, in nats."""

    log_px: np.ndarray
    """(N,) log p̂(x_i) = logsumexp_k log w_ik - log K (the IWAE bound)."""
    elbo: np.ndarray
    """(N,) mean over k of log w_ik: an unbiased estimate of the ELBO."""
    elbo_stderr: np.ndarray
    """(N,) Monte-Carlo standard error of ``elbo``."""
    ess: np.ndarray
    """(N,) effective sample size of the K weights."""
    khat: np.ndarray
    """(N,) Pareto k̂ (NaN when not computed)."""
    k: int
    seconds: float
    prefix: dict[int, np.ndarray]
    """K' -> (N,) the IS estimate from the first K' of the K samples (for curves against
    compute: nested subsets cost nothing extra)."""


# ------------------------------------------------------------ per-datapoint log densities

def _site_terms(sites: Iterable[dict], plate: str, reduce: Callable[[Any, int], Any],
                latent_only: bool = False) -> Any:
    """Σ over sample sites of per-datapoint log densities, each reduced to (..., M) by
    ``reduce(log_prob, plate_dim)``; checks that latents are local and continuous."""
    total = 0.0
    for site in sites:
        if site["type"] != "sample" or site["name"] == "_particles":
            continue
        fn, observed = site["fn"], site["is_observed"]
        if latent_only and observed:
            continue
        support = getattr(fn, "support", None)
        if support is None:  # Pyro's subsample site of a plate
            continue
        if not observed and getattr(support, "is_discrete", False):
            raise VarbayesError(f"site '{site['name']}' is a discrete latent: these estimators "
                                "need continuous per-datapoint latents")
        frames = [f for f in site["cond_indep_stack"] if f.name == plate]
        if not frames:
            if observed and type(fn).__name__ == "Unit":
                continue  # a factor: a term on the parameters, not on x
            kind = "observed" if observed else "latent"
            raise VarbayesError(f"{kind} site '{site['name']}' is outside the '{plate}' plate: "
                                "these estimators need per-datapoint latents and data (a "
                                "global latent makes p(x_i) not factorize)")
        total = total + reduce(fn.log_prob(site["value"]), frames[0].dim)
    return total


def numpyro_log_weights(model: Callable[..., None], guide: Callable[..., None], key: Any,
                        k: int, *args: Any, plate: str = "data", **kwargs: Any) -> Any:
    """(k, M) log p(x, z) - log q(z|x) for k draws z ~ q per datapoint (JAX array)."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    def reduce(lp: Any, plate_dim: int) -> Any:
        lp = jnp.moveaxis(lp, plate_dim, -1)
        return lp.reshape(-1, lp.shape[-1]).sum(0)

    def one(key: Any) -> Any:
        gtr = handlers.trace(handlers.seed(guide, key)).get_trace(*args, **kwargs)
        mtr = handlers.trace(handlers.replay(handlers.seed(model, key), trace=gtr)).get_trace(
            *args, **kwargs)
        return (_site_terms(mtr.values(), plate, reduce)
                - _site_terms(gtr.values(), plate, reduce, latent_only=True))

    return jax.vmap(one)(jax.random.split(key, k))


def pyro_particle_plate(sites: Iterable[dict], n: int
                        ) -> tuple[Callable[[Callable[..., None]], Callable[..., None]],
                                   Callable[[Any, int], Any]]:
    """Vectorize a Pyro model over ``n`` particles with an outer plate ``_particles`` placed
    left of every plate among ``sites`` (a trace's nodes). Returns ``(vec, reduce)``:
    ``vec(fn)`` wraps a model or guide, and ``reduce(log_prob, plate_dim)`` turns a site's
    log-density into (n, M) per particle and datapoint, for :func:`_site_terms`."""
    import pyro
    import torch

    nesting = max([-f.dim for s in sites if s["type"] == "sample"
                   for f in s["cond_indep_stack"]] or [0])
    dim = -(nesting + 1)

    def vec(fn: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*a: Any, **kw: Any) -> None:
            with pyro.plate("_particles", n, dim=dim):
                fn(*a, **kw)
        return wrapped

    def reduce(lp: Any, plate_dim: int) -> Any:
        while lp.dim() < -dim:
            lp = lp.unsqueeze(0)
        lp = torch.movedim(torch.movedim(lp, plate_dim, -1), dim, 0)
        return lp.expand(n, *lp.shape[1:]).reshape(n, -1, lp.shape[-1]).sum(1)

    return vec, reduce


def pyro_log_weights(model: Callable[..., None], guide: Callable[..., None], k: int,
                     *args: Any, plate: str = "data", **kwargs: Any) -> np.ndarray:
    """(k, M) log p(x, z) - log q(z|x), the k draws vectorized by an outer particle plate."""
    import pyro
    import torch

    tr0 = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    _site_terms(tr0.nodes.values(), plate, lambda lp, d: 0.0)  # refuse bad models up front
    vec, reduce = pyro_particle_plate(tr0.nodes.values(), k)

    with torch.no_grad():
        gtr = pyro.poutine.trace(vec(guide)).get_trace(*args, **kwargs)
        mtr = pyro.poutine.trace(pyro.poutine.replay(vec(model), trace=gtr)).get_trace(
            *args, **kwargs)
        log_w = (_site_terms(mtr.nodes.values(), plate, reduce)
                 - _site_terms(gtr.nodes.values(), plate, reduce, latent_only=True))
    return log_w.detach().cpu().numpy()


# ------------------------------------------------------------------------ the driver

def importance_sampling(model: Callable[..., None], guide: Callable[..., None],
                        batches: Iterable[Batch], k: int, *, backend: str = "numpyro",
                        chunk: int = 100, seed: int = 0, plate: str = "data",
                        diagnostics: bool = True, prefix_ks: Sequence[int] = (),
                        progress: Callable[[Iterable], Iterable] | None = None) -> ISResult:
    """IS estimates of log p(x_i) with the guide as proposal, batched over datapoints and
    chunked over the K samples (memory is O(chunk · batch), not O(K · N)).

    Parameters
    ----------
    batches : ``(args, kwargs)`` per batch of datapoints, passed to model and guide.
    k : importance samples per datapoint, K ≥ 1.
    chunk : samples drawn at once; lower it to save memory.
    diagnostics : compute the Pareto k̂ (costs a sort of K weights per datapoint).
    prefix_ks : also report the estimate from the first K' samples, for each K' < K here.
    """
    check(int(k) >= 1, f"k must be >= 1, got {k}")
    check(backend in ("numpyro", "pyro"), f"backend must be 'numpyro' or 'pyro', got {backend!r}")
    chunk = max(1, min(int(chunk), int(k)))
    t0 = time.perf_counter()
    parts: list[tuple[np.ndarray, ...]] = []
    ks = sorted({int(j) for j in prefix_ks if 1 <= int(j) < k})
    prefix: dict[int, list[np.ndarray]] = {j: [] for j in ks}
    fn = _numpyro_chunk_fn(model, guide, plate) if backend == "numpyro" else None
    if backend == "pyro":
        import pyro

        pyro.set_rng_seed(seed)
    it = progress(list(batches)) if progress else batches
    for b, (args, kwargs) in enumerate(it):
        logs = []
        for c, start in enumerate(range(0, k, chunk)):
            n = min(chunk, k - start)
            if backend == "numpyro":
                import jax

                key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), b), c)
                logs.append(np.asarray(fn(key, n, args, kwargs), dtype=np.float64))
            else:
                logs.append(np.asarray(pyro_log_weights(model, guide, n, *args, plate=plate,
                                                        **kwargs), dtype=np.float64))
        log_w = np.concatenate(logs, axis=0)  # (K, M)
        for j in ks:
            prefix[j].append(log_mean_exp(log_w[:j]))
        parts.append((log_mean_exp(log_w), log_w.mean(0),
                      (log_w.std(0, ddof=1) if k > 1 else np.zeros(log_w.shape[1]))
                      / math.sqrt(k),
                      effective_sample_size(log_w),
                      pareto_k(log_w) if diagnostics and k >= 5 else np.full(log_w.shape[1],
                                                                            np.nan)))
    cat = [np.concatenate(a) for a in zip(*parts, strict=True)]
    return ISResult(*cat, k=int(k), seconds=time.perf_counter() - t0,
                    prefix={j: np.concatenate(v) for j, v in prefix.items()})


def _numpyro_chunk_fn(model: Callable[..., None], guide: Callable[..., None], plate: str
                      ) -> Callable[..., Any]:
    """A compiled ``(key, n, args, kwargs) -> (n, M)``, traced once per (n, shapes).

    ``equinox.filter_jit`` traces the arrays in ``args`` and keeps everything else
    (configurations, activation functions, ``n``) static.
    """
    import equinox as eqx

    @eqx.filter_jit
    def run(key: Any, n: int, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        return numpyro_log_weights(model, guide, key, n, *args, plate=plate, **kwargs)

    return run


# ------------------------------------------------------------------------ quadrature

class QuadratureResult(NamedTuple):
    """log p(x_i) by a tensor-product grid over a latent of dimension ≤ 2, in nats."""

    log_px: np.ndarray
    """(N,) the estimate on the fine grid."""
    refinement: np.ndarray
    """(N,) |estimate - estimate on a grid with half the spacing|: the check by refining."""
    seconds: float


def numpyro_log_joint(model: Callable[..., None], site: str, *args: Any,
                      plate: str = "data", **kwargs: Any) -> Callable[[Any], Any]:
    """``z (M, K) -> (M,)`` per-datapoint log p(x_i, z_i) with the latent ``site`` set to z."""
    import jax.numpy as jnp
    from numpyro import handlers

    def reduce(lp: Any, plate_dim: int) -> Any:
        lp = jnp.moveaxis(lp, plate_dim, -1)
        return lp.reshape(-1, lp.shape[-1]).sum(0)

    def log_joint(z: Any) -> Any:
        m = handlers.substitute(handlers.seed(model, 0), data={site: z})
        return _site_terms(handlers.trace(m).get_trace(*args, **kwargs).values(), plate, reduce)

    return log_joint


def _grid(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints (n**K, M, K) of an n-per-axis grid on [lo, hi] per datapoint, and the log
    cell volume (M,); lo, hi (M, K)."""
    t = (np.arange(n) + 0.5) / n
    axes = lo[None] + t[:, None, None] * (hi - lo)[None]  # (n, M, K)
    K = lo.shape[1]
    mesh = np.stack(np.meshgrid(*[np.arange(n)] * K, indexing="ij"), -1).reshape(-1, K)
    pts = np.stack([axes[mesh[:, j], :, j] for j in range(K)], -1)  # (n**K, M, K)
    return pts, np.log((hi - lo) / n).sum(-1)


def quadrature(log_joint: Callable[[Any], Any], z_dim: int, n_data: int, *, n: int = 100,
               box: float = 8.0, width: float = 12.0, chunk: int = 2000) -> QuadratureResult:
    """log p(x_i) = log ∫ p(x_i, z) dz by the midpoint rule on a grid chosen per datapoint.

    A coarse grid over the prior's box [-box, box]^K finds each posterior's mean and standard
    deviation; the fine grid spans mean ± ``width`` sds (at least one coarse cell) with ``n``
    points per axis. The same computation with ``2n`` points measures the error.

    Parameters
    ----------
    log_joint : ``z (M, K) -> (M,)`` log p(x_i, z_i) in nats (see :func:`numpyro_log_joint`).
    z_dim : the latent dimension K; 1 or 2.
    """
    import jax

    check(z_dim in (1, 2), f"quadrature needs a latent of dimension 1 or 2, got {z_dim}: use "
                           "importance sampling or AIS for larger latents")
    t0 = time.perf_counter()
    f = jax.jit(jax.vmap(log_joint))

    def integrate(lo: np.ndarray, hi: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        pts, log_vol = _grid(lo, hi, m)
        vals = np.concatenate([np.asarray(f(pts[i:i + chunk]), dtype=np.float64)
                               for i in range(0, len(pts), chunk)])  # (G, M)
        return logsumexp(vals, axis=0) + log_vol, vals

    lo = np.full((n_data, z_dim), -box)
    coarse_n = 100 if z_dim == 2 else 400
    _, vals = integrate(lo, -lo, coarse_n)
    pts, _ = _grid(lo, -lo, coarse_n)
    w = np.exp(vals - logsumexp(vals, axis=0))[..., None]  # (G, M, 1)
    mean = (w * pts).sum(0)
    sd = np.sqrt(np.maximum((w * (pts - mean) ** 2).sum(0), 0.0))
    half = np.maximum(width * sd, 2 * box / coarse_n)
    lo, hi = mean - half, mean + half
    fine, _ = integrate(lo, hi, n)
    finer, _ = integrate(lo, hi, 2 * n)
    return QuadratureResult(finer, np.abs(finer - fine), time.perf_counter() - t0)

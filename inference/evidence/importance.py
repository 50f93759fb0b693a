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

import functools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.special import logsumexp

from varbayes.inference import ranks
from varbayes.inference.backends import check_backend
from varbayes.inference.evidence import parallel
from varbayes.inference.evidence.batches import Batch
from varbayes.inference.evidence.sites import numpyro_reduce, pyro_particle_plate, site_terms
from varbayes.inference.ppl import (
    checked_pair,
    compiled_once,
    isolated,
    pair_params,
    substituted,
    to_batches,
)
from varbayes.models.errors import check

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


# ------------------------------------------------------------ log weights of a model+guide

def numpyro_log_weights(model: Callable[..., None], guide: Callable[..., None], key: Any,
                        k: int, *args: Any, plate: str | None = "data", **kwargs: Any) -> Any:
    """(k, M) log p(x, z) - log q(z|x) for k draws z ~ q per datapoint (JAX array)."""
    import jax
    from numpyro import handlers

    def one(key: Any) -> Any:
        gtr = handlers.trace(handlers.seed(guide, key)).get_trace(*args, **kwargs)
        mtr = handlers.trace(handlers.replay(handlers.seed(model, key), trace=gtr)).get_trace(
            *args, **kwargs)
        return (site_terms(mtr.values(), plate, numpyro_reduce)
                - site_terms(gtr.values(), plate, numpyro_reduce, latent_only=True))

    return jax.vmap(one)(jax.random.split(key, k))


def pyro_log_weights(model: Callable[..., None], guide: Callable[..., None], k: int,
                     *args: Any, plate: str | None = "data", **kwargs: Any) -> np.ndarray:
    """(k, M) log p(x, z) - log q(z|x), the k draws vectorized by an outer particle plate.

    A model that does not broadcast over that plate (e.g. ``x @ w`` with a vector latent
    ``w``) is run once per draw instead.
    """
    import pyro
    import torch

    tr0 = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    site_terms(tr0.nodes.values(), plate, lambda lp, d: 0.0)  # refuse bad models up front

    def one(vec: Callable[[Callable], Callable], reduce: Callable) -> Any:
        gtr = pyro.poutine.trace(vec(guide)).get_trace(*args, **kwargs)
        mtr = pyro.poutine.trace(pyro.poutine.replay(vec(model), trace=gtr)).get_trace(
            *args, **kwargs)
        return (site_terms(mtr.nodes.values(), plate, reduce)
                - site_terms(gtr.nodes.values(), plate, reduce, latent_only=True))

    def single(lp: Any, plate_dim: int | None) -> Any:
        """One unvectorized draw: a site's log density as (1, M)."""
        if plate_dim is None:
            return lp.sum().reshape(1, 1)
        lp = torch.movedim(lp, plate_dim, -1)
        return lp.reshape(-1, lp.shape[-1]).sum(0, keepdim=True)

    with torch.no_grad():
        try:
            log_w = one(*pyro_particle_plate(tr0.nodes.values(), k))
        except (RuntimeError, ValueError, IndexError):  # shapes that do not broadcast
            log_w = torch.cat([one(lambda fn: fn, single) for _ in range(k)])
    return log_w.detach().cpu().numpy()


# ------------------------------------------------------------------------ the driver

#: Floats (4 bytes each) that the widest intermediate of one chunk may hold: a chunk of
#: draws of a batch of M datapoints of D values each is chunk · M · D of them.
CHUNK_FLOATS = 2**23


def auto_chunk(k: int, batch: Batch, floats: int = CHUNK_FLOATS) -> int:
    """Samples drawn at once for ``k`` samples of ``batch``: ``floats`` over M · D (the
    datapoints times the widest per-datapoint array's size), at least 1 and at most k.

    For MNIST (D = 784) in batches of 100 that is 107 draws: decoder products of about 10⁴
    rows. On the 2-core reference machine (784-200-200-50 VAE, 200 images, K = 5000) chunks
    of 100 ran in 6.6 s, of 53 in 8.1 s, of 200 in 6.8 s and of 400 in 8.0 s.
    """
    args, kwargs = batch
    arrays = [a for a in (*args, *kwargs.values()) if hasattr(a, "shape") and len(a.shape)]
    m = max((int(a.shape[0]) for a in arrays), default=1)
    d = max((int(np.prod(a.shape[1:])) for a in arrays), default=1)
    return int(max(1, min(k, floats // max(1, m * d))))


def importance_sampling(model: Callable[..., None], guide: Callable[..., None],
                        batches: Iterable[Batch], k: int, *, backend: str = "numpyro",
                        chunk: int | None = None, seed: int = 0, plate: str | None = "data",
                        params: Mapping[str, Any] | None = None,
                        diagnostics: bool = True, prefix_ks: Sequence[int] = (),
                        progress: Callable[[Iterable], Iterable] | None = None,
                        devices: int = 1) -> ISResult:
    """IS estimates of log p(x_i) with the guide as proposal, batched over datapoints and
    chunked over the K samples (memory is O(chunk · batch), not O(K · N)).

    The datapoints of each batch may be split (:mod:`.parallel`): over ``devices`` JAX
    devices for a NumPyro pair (the same draws and results as one device), or, in a process
    group started by ``torchrun``, over the torch ranks for a Pyro pair (each rank draws its
    own stream: the results match one process statistically; every rank returns all of
    them, in order).

    Parameters
    ----------
    model, guide : a NumPyro or Pyro pair matching ``backend`` (the other backend's pair is
        refused in one line).
    batches : ``(args, kwargs)`` per batch of datapoints, passed to model and guide (see
        :func:`.batches.batches`); numpy arrays in them are converted.
    k : importance samples per datapoint, K ≥ 1.
    chunk : samples drawn at once (memory is O(chunk · batch)); None: :func:`auto_chunk`.
    plate : the name of the data plate; None for a model whose latents are all global
        (e.g. regression weights): the whole data set is then one datapoint and ``log_px``
        has one entry, log p(y).
    params : the trained values of the guide's (and model's) param sites, in their
        constrained space: ``fit(...).params``. None: the values the pair creates itself
        (their initial values), in both backends (Pyro's global param store is not read).
    diagnostics : compute the Pareto k̂ (costs a sort of K weights per datapoint).
    prefix_ks : also report the estimate from the first K' samples, for each K' < K here.
    devices : NumPyro: JAX devices that split each batch's datapoints (every batch but the
        last must divide by it; the last, short one runs on one device). More than 1 is
        refused for a Pyro pair, which a ``torchrun`` process group splits instead.
    """
    check(int(k) >= 1, f"k must be >= 1, got {k}")
    check(chunk is None or int(chunk) >= 1, f"chunk must be >= 1, got {chunk}")
    check_backend(backend)
    on_jax = backend == "numpyro"
    devices = parallel.resolve_devices(devices, on_jax, plate)
    k = int(k)
    t0 = time.perf_counter()
    batches = to_batches(batches, backend, "importance_sampling")
    chunk = auto_chunk(k, batches[0]) if chunk is None else max(1, min(int(chunk), k))
    mesh = parallel.data_mesh(batches, devices)
    split = not on_jax and parallel.split_ranks(plate)
    with isolated(backend):
        pair = checked_pair(model, guide, *batches[0], backend=backend, params=params)
        if on_jax:  # the params enter the compiled function as arguments (compiled once)
            values = pair_params(params, pair, backend)
            draw = _placed(_numpyro_draws(model, guide, plate, seed, values), mesh)
        else:
            draw = _pyro_draws(pair.model, pair.guide, plate,
                               parallel.rank_seed(seed) if split else seed)
        if not split:
            return _estimate(draw, batches, k, chunk, diagnostics, prefix_ks, progress, t0)
        return _ranked_estimate(draw, batches, k, chunk, diagnostics, prefix_ks, progress, t0)


def _placed(draw: Draws, mesh: Any | None) -> Draws:
    """``draw`` on batches split over ``mesh`` (:func:`.parallel.place`); ``draw`` itself
    for one device."""
    if mesh is None:
        return draw

    def placed(b: int, k: int, chunk: int, args: tuple, kwargs: dict) -> np.ndarray:
        (args, kwargs), _ = parallel.place((args, kwargs), mesh)
        return draw(b, k, chunk, args, kwargs)

    return placed


def _ranked_estimate(draw: Draws, batches: list[Batch], k: int, chunk: int, diagnostics: bool,
                     prefix_ks: Sequence[int],
                     progress: Callable[[Iterable], Iterable] | None, t0: float) -> ISResult:
    """:func:`_estimate` on this torch rank's block of every batch, the per-datapoint results
    of all ranks gathered in the original order (and the seconds of the slowest rank)."""
    sizes = [parallel.batch_rows(b) for b in batches]
    mine = [b for b in map(parallel.local_batch, batches) if parallel.batch_rows(b)]
    ks = sorted({int(j) for j in prefix_ks if 1 <= int(j) < k})
    res = (_estimate(draw, mine, k, chunk, diagnostics, ks, progress, t0) if mine else
           ISResult(*[np.zeros(0)] * 5, k=k, seconds=0.0, prefix={j: np.zeros(0) for j in ks}))
    cols = np.stack([*res[:5], *(res.prefix[j] for j in ks)], axis=1)  # (n_local, 5 + |ks|)
    cols = parallel.gather_points(cols, sizes)
    return ISResult(*cols[:, :5].T, k=k, seconds=ranks.all_max(time.perf_counter() - t0),
                    prefix={j: cols[:, 5 + i] for i, j in enumerate(ks)})


def _estimate(draw: Draws, batches: list[Batch], k: int, chunk: int, diagnostics: bool,
              prefix_ks: Sequence[int], progress: Callable[[Iterable], Iterable] | None,
              t0: float) -> ISResult:
    parts: list[tuple[np.ndarray, ...]] = []
    ks = sorted({int(j) for j in prefix_ks if 1 <= int(j) < k})
    prefix: dict[int, list[np.ndarray]] = {j: [] for j in ks}
    it = progress(list(batches)) if progress else batches
    for b, (args, kwargs) in enumerate(it):
        log_w = draw(b, k, chunk, args, kwargs)  # (K, M)
        for j in ks:
            prefix[j].append(log_mean_exp(log_w[:j]))
        parts.append((log_mean_exp(log_w), log_w.mean(0),
                      (log_w.std(0, ddof=1) if k > 1 else np.zeros(log_w.shape[1]))
                      / math.sqrt(k),
                      effective_sample_size(log_w),
                      pareto_k(log_w) if diagnostics and k >= 5 else np.full(log_w.shape[1],
                                                                            np.nan)))
    cat = [np.concatenate(a) for a in zip(*parts, strict=True)]
    return ISResult(*cat, k=k, seconds=time.perf_counter() - t0,
                    prefix={j: np.concatenate(v) for j, v in prefix.items()})


Draws = Callable[[int, int, int, tuple, dict], np.ndarray]
"""``(batch index b, k, chunk, args, kwargs) -> (k, M)`` float64 log weights, drawn ``chunk``
at a time."""


def _numpyro_draws(model: Callable[..., None], guide: Callable[..., None], plate: str | None,
                   seed: int, params: tuple[dict, dict] = ({}, {})) -> Draws:
    """NumPyro log weights; chunk c of batch b uses the key ``fold_in(fold_in(key(seed), b),
    c)``. The full chunks of a batch run in one compiled loop (``lax.map``: one call and one
    transfer to the host per batch, memory O(chunk · M)), a last partial chunk in a second
    call. ``params``: the values substituted into the model's and the guide's param sites.
    """
    import jax

    run = compiled_once(_numpyro_run, model, guide, plate)

    def draw(b: int, k: int, chunk: int, args: tuple, kwargs: dict) -> np.ndarray:
        key = jax.random.fold_in(jax.random.key(seed), b)
        full, rest = divmod(k, chunk)
        parts = [run(key, 0, full, chunk, args, kwargs, params)] if full else []
        if rest:
            parts.append(run(key, full, 1, rest, args, kwargs, params))
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])

    return draw


@functools.lru_cache(maxsize=16)
def _numpyro_run(model: Callable[..., None], guide: Callable[..., None],
                 plate: str | None) -> Callable[..., Any]:
    """The compiled chunk loop of :func:`_numpyro_draws`, kept across calls with the same
    model, guide and plate (a repeated evaluation compiles once per shape).

    ``equinox.filter_jit`` traces the arrays in ``args``, ``kwargs`` and the params and
    keeps everything else (configurations, activation functions, the sizes) static.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    @eqx.filter_jit
    def run(key: Any, first: Any, n_chunks: int, n: int, args: Sequence[Any],
            kwargs: dict[str, Any], params: tuple[dict, dict]) -> Any:
        m, g = substituted(model, guide, params)

        def one(c: Any) -> Any:
            return numpyro_log_weights(m, g, jax.random.fold_in(key, c), n, *args,
                                       plate=plate, **kwargs)

        out = jax.lax.map(one, first + jnp.arange(n_chunks))  # (n_chunks, n, M)
        return out.reshape(n_chunks * n, *out.shape[2:])

    return run


def _pyro_draws(model: Callable[..., None], guide: Callable[..., None], plate: str | None,
                seed: int) -> Draws:
    """Pyro log weights from the global torch generator, seeded once here."""
    import pyro

    pyro.set_rng_seed(seed)

    def draw(b: int, k: int, chunk: int, args: tuple, kwargs: dict) -> np.ndarray:
        return np.concatenate([
            np.asarray(pyro_log_weights(model, guide, min(chunk, k - start), *args,
                                        plate=plate, **kwargs), dtype=np.float64)
            for start in range(0, k, chunk)])

    return draw

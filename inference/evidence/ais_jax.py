"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) for models with
per-datapoint continuous latents; the JAX core and its NumPyro adapter.

Per datapoint i, with a tractable start density p₀(z) (the prior p(z), or the guide
q(z|x_i)) and ℓ_i(z) = log p(x_i, z) − log p₀(z), the geometric path

    log f_β(z) = log p₀(z) + β ℓ_i(z),   0 = β_0 < β_1 < … < β_T = 1,

runs from p₀ (normalizer 1) to the posterior (normalizer p(x_i)). A chain starts at
z ~ p₀ and alternates a weight update log w += (β_t − β_{t−1}) ℓ_i(z) with an HMC transition
that leaves f_{β_t} invariant (Neal 2001). E[w] = p(x_i), so log-mean-exp of log w over C
chains is a stochastic lower bound on log p(x_i). Run backwards from an exact posterior
sample (available for data simulated from the model), the same recursion estimates
1/p(x_i): its log is a stochastic *upper* bound (BDMC, Grosse et al. 2015). The gap between
the two bounds bounds the error of both.

The step size is adapted per datapoint and chain after every transition,
ε ← ε·exp(rate·(a − 0.65)) with a the HMC acceptance probability (as in Wu et al. 2017);
the transition at step t depends only on the past, so the weights stay valid.

Each chain carries its :class:`.annealing.Point` (z, both log densities and their
gradients) from one transition to the next, so the weight update and the start of a
transition cost nothing and a transition costs its leapfrog gradients only.

The pieces are pure: :func:`hmc_kernel` (and :func:`hmc_step` on a plain log density),
:func:`evaluate`, :func:`ais_step` on an :class:`AISState`, :func:`run`
(a ``lax.scan``), and :func:`numpyro_ais`, which builds the densities from a NumPyro
model+guide pair; the schedule and the options are shared with the torch implementation
(:mod:`.annealing`). All log densities are in nats.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.evidence.annealing import (
    DEFAULTS,
    JITTER,
    PILOT_CHAINS,
    AISOptions,
    AISResult,
    Point,
    finish,
    path_betas,
    tempered,
)
from varbayes.inference.evidence.parallel import data_mesh, place
from varbayes.inference.evidence.sites import (
    flatten,
    latent_sites,
    numpyro_reduce,
    split_terms,
    unflatten,
)
from varbayes.inference.ppl import compiled_once, substituted
from varbayes.models.errors import check

# ------------------------------------------------------------------------ the JAX core

class AISState(NamedTuple):
    """What the next AIS step needs; arrays over chains C and datapoints M."""

    at: Point
    """the current latents, with the densities and gradients there."""
    log_w: Any
    """(C, M) the accumulated log weight."""
    step_size: Any
    """(C, M) the HMC step size of each chain."""

    @property
    def z(self) -> Any:
        """(C, M, d) the current latents."""
        return self.at.z


class AISInfo(NamedTuple):
    """Diagnostics of one AIS step."""

    accept: Any
    """(C, M) the acceptance probability of the HMC transition."""
    step_size: Any
    """(C, M) the step size this transition used."""


LogDensity = Callable[[Any], Any]
"""z (C, M, d) -> (C, M) a log density per chain and datapoint (independent elements)."""


def _value_and_grad(log_f: LogDensity, z: Any) -> tuple[Any, Any]:
    """(log_f(z) (C, M), its gradient (C, M, d)) from one forward and one backward pass; the
    elements are independent, so the gradient of the sum is each element's gradient."""
    import jax
    import jax.numpy as jnp

    f, back = jax.vjp(log_f, z)
    return f, back(jnp.ones_like(f))[0]


def evaluate(z: Any, log_p0: LogDensity, log_joint: LogDensity) -> Point:
    """The :class:`Point` at z (C, M, d)."""
    l0, g0 = _value_and_grad(log_p0, z)
    lj, gj = _value_and_grad(log_joint, z)
    return Point(z, l0, lj, g0, gj)


class _Plain(NamedTuple):
    z: Any
    log_f: Any
    grad: Any


def hmc_kernel(key: Any, start: Any, step_size: Any, grad: Callable[[Any], Any],
               at: Callable[[Any], Any], density: Callable[[Any], tuple[Any, Any]],
               n_leapfrog: int, jitter: float = JITTER) -> tuple[Any, Any]:
    """One HMC transition with a unit mass matrix, independently for each (chain, datapoint),
    on points that carry what was computed at them.

    ``start`` is a NamedTuple with a field ``z`` (C, M, d) and any other (C, M, ...) arrays;
    ``at(z)`` makes such a point and ``density(point)`` gives (log f (C, M), ∇ log f
    (C, M, d)) from it without new passes; ``grad(z)`` is ∇ log f alone. The inner leapfrog
    steps take ``grad`` (a backward pass needs no log density value, whose transcendentals
    can cost as much as a matrix product) and the last one takes ``at``, so a transition
    costs ``n_leapfrog`` forward and backward passes: the start's values come with ``start``.

    The step size is jittered uniformly by ±``jitter`` (relative) each transition: with a
    fixed step size and trajectory length HMC can be close to periodic on a Gaussian and
    stop mixing (seen on PPCA posteriors: draws kept their starting spread).
    Returns the new point (the start where rejected) and the acceptance probability (C, M).
    """
    import jax
    import jax.numpy as jnp

    k_mom, k_acc, k_jit = jax.random.split(key, 3)
    u = jax.random.uniform(k_jit, step_size.shape, step_size.dtype, -jitter, jitter)
    eps = (step_size * (1.0 + u))[..., None]
    p0 = jax.random.normal(k_mom, start.z.shape, start.z.dtype)
    f0, g0 = density(start)

    def leap(_: int, carry: tuple[Any, Any]) -> tuple[Any, Any]:  # full steps in between
        q, p = carry
        q = q + eps * p
        return q, p + eps * grad(q)

    q, p = jax.lax.fori_loop(0, n_leapfrog - 1, leap, (start.z, p0 + 0.5 * eps * g0))
    end = at(q + eps * p)
    f1, g1 = density(end)
    p = p + 0.5 * eps * g1
    log_ratio = (f1 - 0.5 * (p**2).sum(-1)) - (f0 - 0.5 * (p0**2).sum(-1))
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
    accept = jnp.exp(jnp.minimum(log_ratio, 0.0))
    take = jax.random.uniform(k_acc, accept.shape) < accept

    def pick(new: Any, old: Any) -> Any:
        return jnp.where(take.reshape(take.shape + (1,) * (new.ndim - take.ndim)), new, old)

    return jax.tree.map(pick, end, start), accept


def hmc_step(key: Any, z: Any, step_size: Any, log_f: LogDensity, n_leapfrog: int,
             jitter: float = JITTER) -> tuple[Any, Any]:
    """:func:`hmc_kernel` on a plain log density: the new z (C, M, d) and the acceptance
    probability (C, M). Costs ``n_leapfrog`` + 1 forward and backward passes."""
    import jax

    def at(q: Any) -> _Plain:
        return _Plain(q, *_value_and_grad(log_f, q))

    point, accept = hmc_kernel(key, at(z), step_size, jax.grad(lambda q: log_f(q).sum()), at,
                               lambda pt: (pt.log_f, pt.grad), n_leapfrog, jitter)
    return point.z, accept


def ais_step(key: Any, state: AISState, beta_prev: Any, beta: Any, log_p0: LogDensity,
             log_joint: LogDensity, options: AISOptions, transition: bool = True,
             step_size: Any = None) -> tuple[AISState, AISInfo]:
    """log w += (β − β_prev)·ℓ(z), then an HMC transition leaving f_β invariant. With
    ``step_size`` (M,) given, every chain uses it; otherwise each chain uses its own
    ``state.step_size``, updated after the transition toward ``options.target_accept``.
    With β decreasing this is the reverse (BDMC) chain's step. The densities at z come with
    ``state.at``, so the step costs ``options.n_leapfrog`` forward and backward passes."""
    import jax
    import jax.numpy as jnp

    at = state.at
    log_w = state.log_w + (beta - beta_prev) * (at.log_joint - at.log_p0)
    if not transition:
        return state._replace(log_w=log_w), AISInfo(jnp.ones_like(log_w), state.step_size)
    if step_size is not None:
        state = state._replace(step_size=jnp.broadcast_to(step_size, log_w.shape))

    def log_f(z: Any) -> Any:
        a = log_p0(z)
        return a + beta * (log_joint(z) - a)

    at, accept = hmc_kernel(key, at, state.step_size, jax.grad(lambda z: log_f(z).sum()),
                            lambda z: evaluate(z, log_p0, log_joint),
                            lambda pt: tempered(pt, beta),
                            options.n_leapfrog)
    eps = state.step_size * jnp.exp(options.adapt_rate * (accept - options.target_accept))
    eps = jnp.clip(eps, 1e-4, 10.0)
    return AISState(at, log_w, eps), AISInfo(accept, state.step_size)


def run(key: Any, z0: Any, betas: Any, log_p0: LogDensity, log_joint: LogDensity,
        options: AISOptions, step_sizes: Any = None) -> tuple[AISState, AISInfo]:
    """The whole chain along ``betas`` (T+1,), from z0 (C, M, d); a ``lax.scan``.

    Increasing betas (0 → 1) give forward AIS, whose ``log_w`` estimates log p(x); decreasing
    betas (1 → 0) from exact posterior samples give ``log_w`` whose negation is the reverse
    chain's estimate of log p(x) (an upper bound). The transition after the last weight
    update is skipped. ``step_sizes`` (T−1, M) freezes the step size of every transition;
    without it each chain adapts its own (see :func:`adapted_run` for why that alone is not
    enough). Returns the final state and the per-step infos (T−1, C, M).
    """
    import jax
    import jax.numpy as jnp

    betas = jnp.asarray(betas, dtype=z0.dtype)
    state = AISState(evaluate(z0, log_p0, log_joint), jnp.zeros(z0.shape[:2], z0.dtype),
                     jnp.full(z0.shape[:2], options.step_size, z0.dtype))
    T = betas.shape[0] - 1

    def body(state: AISState, xs: tuple[Any, ...]) -> tuple[AISState, AISInfo]:
        k, b0, b1, eps = xs
        return ais_step(k, state, b0, b1, log_p0, log_joint, options, step_size=eps)

    keys = jax.random.split(key, T)
    state, infos = jax.lax.scan(body, state, (keys[:-1], betas[:-2], betas[1:-1], step_sizes))
    state, _ = ais_step(keys[-1], state, betas[-2], betas[-1], log_p0, log_joint, options,
                        transition=False)
    return state, infos


def adapted_run(key: Any, z0: Any, betas: Any, log_p0: LogDensity, log_joint: LogDensity,
                options: AISOptions, pilot_chains: int = PILOT_CHAINS
                ) -> tuple[AISState, AISInfo]:
    """AIS with step sizes adapted in a pilot run and then frozen.

    A step size that a chain adapts from its own acceptances depends on the chain's current
    state, so the transition no longer leaves f_β invariant: on PPCA that biased forward and
    reverse estimates alike by about 0.1 nats. Here ``pilot_chains`` chains per datapoint
    adapt along the same schedule; the geometric mean of their step sizes at each β becomes
    the fixed per-datapoint schedule of the C chains that give the estimate.
    """
    import jax
    import jax.numpy as jnp

    k_pilot, k_run = jax.random.split(key)
    _, pilot = run(k_pilot, z0[:pilot_chains], betas, log_p0, log_joint, options)
    eps = jnp.exp(jnp.log(pilot.step_size).mean(axis=1))  # (T−1, M)
    return run(k_run, z0[pilot_chains:], betas, log_p0, log_joint, options, step_sizes=eps)


# ------------------------------------------------------------ densities of a model+guide

class Densities(NamedTuple):
    """Per-datapoint densities of one batch, over flattened latents z (C, M, d)."""

    log_p0: LogDensity
    log_joint: LogDensity
    sample_p0: Callable[[Any, int], Any]
    """(key, C) -> (C, M, d) draws from p₀."""
    dim: int


def numpyro_densities(model: Callable[..., None], guide: Callable[..., None], args: tuple,
                      kwargs: dict, *, init: str = "prior", plate: str = "data") -> Densities:
    """The AIS densities of a NumPyro model+guide on one batch ``(args, kwargs)``."""
    import jax
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    sites = latent_sites(tr.values(), plate)
    names = [n for n, _ in sites]

    def terms(fn: Callable[..., None], z: Any) -> tuple[Any, Any]:  # z (M, d)
        m = handlers.substitute(handlers.seed(fn, 0), data=unflatten(z, sites))
        return split_terms(handlers.trace(m).get_trace(*args, **kwargs).values(), plate, names,
                           numpyro_reduce)

    def log_joint(z: Any) -> Any:
        return jax.vmap(lambda zc: sum(terms(model, zc)))(z)

    def draw(fn: Callable[..., None]) -> Callable[[Any, int], Any]:
        def one(key: Any) -> Any:
            t = handlers.trace(handlers.seed(fn, key)).get_trace(*args, **kwargs)
            return flatten({n: t[n]["value"] for n in names}, sites, 1)
        return lambda key, C: jax.vmap(one)(jax.random.split(key, C))

    if init == "prior":
        def log_p0(z: Any) -> Any:
            return jax.vmap(lambda zc: terms(model, zc)[0])(z)
        sample = draw(model)
    else:
        gtr = handlers.trace(handlers.seed(guide, 0)).get_trace(*args, **kwargs)
        check(sorted(n for n, _ in latent_sites(gtr.values(), plate)) == sorted(names),
              "the guide must sample exactly the model's latent sites")

        def log_p0(z: Any) -> Any:
            return jax.vmap(lambda zc: terms(guide, zc)[0])(z)
        sample = draw(guide)
    dim = sum(int(np.prod(s, dtype=np.int64)) for _, s in sites)
    return Densities(log_p0, log_joint, sample, dim)


# ------------------------------------------------------------------------ the driver

@functools.lru_cache(maxsize=16)
def _compiled(model: Callable[..., None], guide: Callable[..., None], options: AISOptions,
              plate: str, reverse: bool) -> Callable[..., tuple[Any, Any]]:
    """The compiled per-batch AIS run of :func:`numpyro_ais` for one model, guide and
    settings: (log weights (C, M), mean acceptance per transition)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    betas = path_betas(options, reverse)

    @eqx.filter_jit
    def one(key: Any, args: tuple, kwargs: dict, z_post: Any, params: tuple[dict, dict]
            ) -> tuple[Any, Any]:
        m, g = substituted(model, guide, params)
        d = numpyro_densities(m, g, args, kwargs, init=options.init, plate=plate)
        k0, k1 = jax.random.split(key)
        n = options.chains + PILOT_CHAINS
        if z_post is None:
            z0 = d.sample_p0(k0, n)
        else:
            z0 = jnp.broadcast_to(z_post, (n, *z_post.shape))
        state, info = adapted_run(k1, z0, betas, d.log_p0, d.log_joint, options, PILOT_CHAINS)
        return state.log_w, info.accept.mean(axis=(1, 2))

    return one


def numpyro_ais(model: Callable[..., None], guide: Callable[..., None],
                batches: Iterable[tuple[tuple, dict]], options: AISOptions = DEFAULTS, *,
                seed: int = 0, plate: str = "data", posterior: Sequence[Any] | None = None,
                progress: Callable[[Iterable], Iterable] | None = None, devices: int = 1,
                params: tuple[dict, dict] = ({}, {})) -> AISResult:
    """AIS estimates of log p(x_i) for a NumPyro model+guide, batch by batch.

    Parameters
    ----------
    batches : ``(args, kwargs)`` per batch of datapoints, as for
        :func:`.importance.importance_sampling`.
    posterior : for BDMC, one (M, d) array per batch of exact posterior samples (the z that
        generated x, see :func:`.sites.flatten_latents`); the chains then run in reverse, from β = 1
        to 0, and the result is a stochastic upper bound.
    devices : JAX devices that split each batch's datapoints (and its posterior rows), see
        :func:`.parallel.place`: the same draws and results as one device.
    params : the values substituted into the model's and the guide's param sites (traced
        arguments of the compiled run, which is kept across calls with the same model,
        guide and settings).
    """
    import jax
    import jax.numpy as jnp

    reverse = posterior is not None
    one = compiled_once(_compiled, model, guide, options, plate, reverse)
    t0 = time.perf_counter()
    batches = list(batches)
    mesh = data_mesh(batches, devices)
    parts = []
    it = progress(batches) if progress else batches
    for b, (args, kwargs) in enumerate(it):
        key = jax.random.fold_in(jax.random.key(seed), b)
        zp = None if posterior is None else jnp.asarray(posterior[b], dtype=jnp.float32)
        (args, kwargs), (zp,) = place((args, kwargs), mesh, zp)
        log_w, acc = one(key, args, kwargs, zp, params)
        parts.append((np.asarray(log_w), np.asarray(acc)))
    return finish(parts, reverse, t0)

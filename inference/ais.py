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

The pieces are pure: :func:`schedule` (shared with the torch implementation in
:mod:`inference.ais_pyro`), :func:`hmc_step`, :func:`ais_step` on an :class:`AISState`,
:func:`run` (a ``lax.scan``), and :func:`numpyro_ais`, which builds the densities from a
NumPyro model+guide pair. All log densities are in nats.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from inference.errors import VarbayesError, check

SCHEDULES = ("linear", "sigmoid")
INITS = ("prior", "guide")
JITTER = 0.5
"""relative jitter of the HMC step size per transition."""
PILOT_CHAINS = 4
"""chains per datapoint that adapt the step sizes before the estimating chains run."""


class AISOptions(NamedTuple):
    """Settings of AIS (both backends)."""

    n_steps: int = 200
    """T, the number of intermediate distributions (transitions); T = 1 is plain IS from p₀."""
    chains: int = 16
    """C, independent chains per datapoint."""
    schedule: str = "sigmoid"
    """``linear`` or ``sigmoid`` spacing of β (sigmoid: denser near 0 and 1)."""
    init: str = "prior"
    """start density p₀: ``prior`` p(z) or ``guide`` q(z|x)."""
    n_leapfrog: int = 10
    """leapfrog steps per HMC transition."""
    step_size: float = 0.05
    """initial HMC step size."""
    target_accept: float = 0.65
    """the acceptance probability the step size is adapted toward."""
    adapt_rate: float = 0.5
    """ε ← ε·exp(rate·(a − target)) after each transition."""


DEFAULTS = AISOptions()


def check_options(o: AISOptions) -> None:
    """Raise a one-line :class:`VarbayesError` on a bad setting."""
    check(int(o.n_steps) >= 1, f"AIS needs n_steps >= 1 intermediate distributions, got "
                               f"{o.n_steps}")
    check(int(o.chains) >= 1, f"AIS needs chains >= 1, got {o.chains}")
    check(o.schedule in SCHEDULES, f"AIS schedule must be one of {', '.join(SCHEDULES)}, got "
                                   f"{o.schedule!r}")
    check(o.init in INITS, f"AIS init must be one of {', '.join(INITS)}, got {o.init!r}")
    check(int(o.n_leapfrog) >= 1, f"AIS needs n_leapfrog >= 1, got {o.n_leapfrog}")
    check(o.step_size > 0, f"AIS step_size must be > 0, got {o.step_size}")
    check(0 < o.target_accept < 1, f"AIS target_accept must be in (0, 1), got "
                                   f"{o.target_accept}")
    check(o.adapt_rate >= 0, f"AIS adapt_rate must be >= 0, got {o.adapt_rate}")


def schedule(n_steps: int, kind: str = "sigmoid", delta: float = 4.0) -> np.ndarray:
    """(T+1,) increasing β from 0 to 1 (float64).

    ``linear``: β_t = t/T. ``sigmoid``: β_t ∝ σ(δ(2t/T − 1)) rescaled to [0, 1] (Grosse
    et al. 2015), which spends more steps where the path changes fastest, near the ends.
    """
    check(int(n_steps) >= 1, f"AIS needs n_steps >= 1, got {n_steps}")
    check(kind in SCHEDULES, f"AIS schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    t = np.linspace(0.0, 1.0, int(n_steps) + 1)
    if kind == "linear" or n_steps == 1:
        return t
    s = 1.0 / (1.0 + np.exp(-delta * (2.0 * t - 1.0)))
    return (s - s[0]) / (s[-1] - s[0])


def log_mean_exp_stderr(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log (1/C) Σ_c w_c over axis 0 of (C, N) and its delta-method standard error
    sd(w)/(√C · mean(w)); 0 when C = 1."""
    log_w = np.asarray(log_w, dtype=np.float64)
    m = log_w.max(0)
    w = np.exp(log_w - m)
    est = np.log(w.mean(0)) + m
    C = log_w.shape[0]
    se = w.std(0, ddof=1) / (math.sqrt(C) * w.mean(0)) if C > 1 else np.zeros(log_w.shape[1])
    return est, se


# ------------------------------------------------------------------------ the JAX core

class AISState(NamedTuple):
    """What the next AIS step needs; arrays over chains C and datapoints M."""

    z: Any
    """(C, M, d) the current latents."""
    log_w: Any
    """(C, M) the accumulated log weight."""
    step_size: Any
    """(C, M) the HMC step size of each chain."""


class AISInfo(NamedTuple):
    """Diagnostics of one AIS step."""

    accept: Any
    """(C, M) the acceptance probability of the HMC transition."""
    step_size: Any
    """(C, M) the step size this transition used."""


LogDensity = Callable[[Any], Any]
"""z (C, M, d) -> (C, M) a log density per chain and datapoint (independent elements)."""


def hmc_step(key: Any, z: Any, step_size: Any, log_f: LogDensity, n_leapfrog: int,
             jitter: float = JITTER) -> tuple[Any, Any]:
    """One HMC transition with a unit mass matrix, independently for each (chain, datapoint).

    The step size is jittered uniformly by ±``jitter`` (relative) each transition: with a
    fixed step size and trajectory length HMC can be close to periodic on a Gaussian and
    stop mixing (seen on PPCA posteriors: draws kept their starting spread).
    Returns the new z (C, M, d) and the acceptance probability (C, M).
    """
    import jax
    import jax.numpy as jnp

    grad = jax.grad(lambda z: log_f(z).sum())
    k_mom, k_acc, k_jit = jax.random.split(key, 3)
    u = jax.random.uniform(k_jit, step_size.shape, step_size.dtype, -jitter, jitter)
    eps = (step_size * (1.0 + u))[..., None]
    p0 = jax.random.normal(k_mom, z.shape, z.dtype)

    def leap(_: int, carry: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        q, p, g = carry
        p = p + 0.5 * eps * g
        q = q + eps * p
        g = grad(q)
        return q, p + 0.5 * eps * g, g

    q, p, _ = jax.lax.fori_loop(0, n_leapfrog, leap, (z, p0, grad(z)))
    log_ratio = (log_f(q) - 0.5 * (p**2).sum(-1)) - (log_f(z) - 0.5 * (p0**2).sum(-1))
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
    accept = jnp.exp(jnp.minimum(log_ratio, 0.0))
    take = jax.random.uniform(k_acc, accept.shape) < accept
    return jnp.where(take[..., None], q, z), accept


def ais_step(key: Any, state: AISState, beta_prev: Any, beta: Any, log_p0: LogDensity,
             log_joint: LogDensity, options: AISOptions, transition: bool = True,
             step_size: Any = None) -> tuple[AISState, AISInfo]:
    """log w += (β − β_prev)·ℓ(z), then an HMC transition leaving f_β invariant. With
    ``step_size`` (M,) given, every chain uses it; otherwise each chain uses its own
    ``state.step_size``, updated after the transition toward ``options.target_accept``.
    With β decreasing this is the reverse (BDMC) chain's step."""
    import jax.numpy as jnp

    l0 = log_p0(state.z)
    log_w = state.log_w + (beta - beta_prev) * (log_joint(state.z) - l0)
    if not transition:
        return state._replace(log_w=log_w), AISInfo(jnp.ones_like(log_w), state.step_size)
    if step_size is not None:
        state = state._replace(step_size=jnp.broadcast_to(step_size, log_w.shape))

    def log_f(z: Any) -> Any:
        a = log_p0(z)
        return a + beta * (log_joint(z) - a)

    z, accept = hmc_step(key, state.z, state.step_size, log_f, options.n_leapfrog)
    eps = state.step_size * jnp.exp(options.adapt_rate * (accept - options.target_accept))
    eps = jnp.clip(eps, 1e-4, 10.0)
    return AISState(z, log_w, eps), AISInfo(accept, state.step_size)


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
    state = AISState(z0, jnp.zeros(z0.shape[:2], z0.dtype),
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
                options: AISOptions, pilot_chains: int = 4) -> tuple[AISState, AISInfo]:
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

def is_real(support: Any) -> bool:
    """True for ``real`` or ``real_vector`` supports (both backends' constraint objects)."""
    base = getattr(support, "base_constraint", support)
    return type(base).__name__ == "_Real"


def latent_sites(sites: Iterable[dict], plate: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, per-datapoint shape) of each latent site; refuses latents that are discrete,
    outside ``plate``, constrained, or without the plate as their leftmost dimension."""
    out = []
    for s in sites:
        if s["type"] != "sample" or s["is_observed"] or s["name"] == "_particles":
            continue
        fn = s["fn"]
        support = getattr(fn, "support", None)
        if support is None:
            continue
        name = s["name"]
        if getattr(support, "is_discrete", False):
            raise VarbayesError(f"site '{name}' is a discrete latent: AIS needs continuous "
                                "per-datapoint latents")
        frames = [f for f in s["cond_indep_stack"] if f.name == plate]
        if not frames:
            raise VarbayesError(f"latent site '{name}' is outside the '{plate}' plate: AIS "
                                "needs per-datapoint latents (a global latent makes p(x_i) "
                                "not factorize)")
        if not is_real(support):
            raise VarbayesError(f"latent site '{name}' has support {support}: AIS here needs "
                                "unconstrained real latents")
        shape = tuple(s["value"].shape)
        if len(shape) + frames[0].dim - len(fn.event_shape) != 0:
            raise VarbayesError(f"latent site '{name}' must have the '{plate}' plate as its "
                                f"leftmost dimension, got shape {shape}")
        out.append((name, shape[1:]))
    check(bool(out), "the model has no latent sample site: nothing to integrate")
    return out


def split_terms(sites: Iterable[dict], plate: str, latents: Sequence[str],
                reduce: Callable[[Any, int], Any]) -> tuple[Any, Any]:
    """(Σ latent terms, Σ other terms) per datapoint, each reduced by ``reduce(log_prob,
    plate_dim)``; ``factor`` sites outside the plate (terms on parameters) are left out."""
    prior, rest = 0.0, 0.0
    for s in sites:
        if s["type"] != "sample" or s["name"] == "_particles":
            continue
        if getattr(s["fn"], "support", None) is None:
            continue
        frames = [f for f in s["cond_indep_stack"] if f.name == plate]
        if not frames:
            if type(s["fn"]).__name__ == "Unit":
                continue
            raise VarbayesError(f"site '{s['name']}' is outside the '{plate}' plate: AIS needs "
                                "per-datapoint latents and data")
        term = reduce(s["fn"].log_prob(s["value"]), frames[0].dim)
        if s["name"] in latents:
            prior = prior + term
        else:
            rest = rest + term
    return prior, rest


class Densities(NamedTuple):
    """Per-datapoint densities of one batch, over flattened latents z (C, M, d)."""

    log_p0: LogDensity
    log_joint: LogDensity
    sample_p0: Callable[[Any, int], Any]
    """(key, C) -> (C, M, d) draws from p₀."""
    dim: int


def _flatten(values: dict[str, Any], sites: Sequence[tuple[str, tuple[int, ...]]], lead: int
             ) -> Any:
    import jax.numpy as jnp

    return jnp.concatenate([values[n].reshape(*values[n].shape[:lead], -1) for n, _ in sites],
                           -1)


def _unflatten(z: Any, sites: Sequence[tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    out, i = {}, 0
    for name, shape in sites:
        n = int(np.prod(shape, dtype=np.int64))
        out[name] = z[..., i:i + n].reshape(*z.shape[:-1], *shape)
        i += n
    return out


def numpyro_densities(model: Callable[..., None], guide: Callable[..., None], args: tuple,
                      kwargs: dict, *, init: str = "prior", plate: str = "data") -> Densities:
    """The AIS densities of a NumPyro model+guide on one batch ``(args, kwargs)``."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    sites = latent_sites(tr.values(), plate)
    names = [n for n, _ in sites]

    def reduce(lp: Any, plate_dim: int) -> Any:
        lp = jnp.moveaxis(lp, plate_dim, -1)
        return lp.reshape(-1, lp.shape[-1]).sum(0)

    def terms(fn: Callable[..., None], z: Any) -> tuple[Any, Any]:  # z (M, d)
        m = handlers.substitute(handlers.seed(fn, 0), data=_unflatten(z, sites))
        return split_terms(handlers.trace(m).get_trace(*args, **kwargs).values(), plate, names,
                           reduce)

    def log_joint(z: Any) -> Any:
        return jax.vmap(lambda zc: sum(terms(model, zc)))(z)

    def draw(fn: Callable[..., None]) -> Callable[[Any, int], Any]:
        def one(key: Any) -> Any:
            t = handlers.trace(handlers.seed(fn, key)).get_trace(*args, **kwargs)
            return _flatten({n: t[n]["value"] for n in names}, sites, 1)
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


def flatten_latents(model: Callable[..., None], args: tuple, kwargs: dict,
                    values: dict[str, Any], plate: str = "data") -> Any:
    """The per-datapoint latents ``values`` (name -> (M, ...)) as one (M, d) array in the
    order AIS uses (for BDMC's exact posterior samples)."""
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    return _flatten(values, latent_sites(tr.values(), plate), 1)


# ------------------------------------------------------------------------ the driver

class AISResult(NamedTuple):
    """AIS estimates per datapoint, in nats."""

    log_px: np.ndarray
    """(N,) log-mean-exp over chains of the log weights: a stochastic lower bound on log
    p(x_i) (forward) or, for the reverse chain, an upper bound."""
    stderr: np.ndarray
    """(N,) delta-method standard error of ``log_px`` over chains."""
    log_w: np.ndarray
    """(C, N) per-chain log weights (forward) or per-chain upper-bound terms (reverse)."""
    accept: np.ndarray
    """(T−1,) mean HMC acceptance probability per transition."""
    seconds: float


def _finish(parts: list[tuple[np.ndarray, np.ndarray]], reverse: bool, t0: float
            ) -> AISResult:
    log_w = np.concatenate([p[0] for p in parts], axis=1).astype(np.float64)  # (C, N)
    accept = np.mean([p[1] for p in parts], axis=0) if parts[0][1].size else np.zeros(0)
    if reverse:  # log_w holds log(1/p̂) per chain: estimate log p = −log-mean-exp(−…)
        est, se = log_mean_exp_stderr(log_w)
        return AISResult(-est, se, -log_w, accept, time.perf_counter() - t0)
    est, se = log_mean_exp_stderr(log_w)
    return AISResult(est, se, log_w, accept, time.perf_counter() - t0)


def numpyro_ais(model: Callable[..., None], guide: Callable[..., None],
                batches: Iterable[tuple[tuple, dict]], options: AISOptions = DEFAULTS, *,
                seed: int = 0, plate: str = "data", posterior: Sequence[Any] | None = None,
                progress: Callable[[Iterable], Iterable] | None = None) -> AISResult:
    """AIS estimates of log p(x_i) for a NumPyro model+guide, batch by batch.

    Parameters
    ----------
    batches : ``(args, kwargs)`` per batch of datapoints, as for
        :func:`inference.evidence.importance_sampling`.
    posterior : for BDMC, one (M, d) array per batch of exact posterior samples (the z that
        generated x, see :func:`flatten_latents`); the chains then run in reverse, from β = 1
        to 0, and the result is a stochastic upper bound.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    check_options(options)
    betas = schedule(options.n_steps, options.schedule)
    reverse = posterior is not None
    if reverse:
        betas = betas[::-1].copy()

    @eqx.filter_jit
    def one(key: Any, args: tuple, kwargs: dict, z_post: Any) -> tuple[Any, Any]:
        d = numpyro_densities(model, guide, args, kwargs, init=options.init, plate=plate)
        k0, k1 = jax.random.split(key)
        n = options.chains + PILOT_CHAINS
        if z_post is None:
            z0 = d.sample_p0(k0, n)
        else:
            z0 = jnp.broadcast_to(z_post, (n, *z_post.shape))
        state, info = adapted_run(k1, z0, betas, d.log_p0, d.log_joint, options, PILOT_CHAINS)
        return state.log_w, info.accept.mean(axis=(1, 2))

    t0 = time.perf_counter()
    parts = []
    it = progress(list(batches)) if progress else batches
    for b, (args, kwargs) in enumerate(it):
        key = jax.random.fold_in(jax.random.key(seed), b)
        zp = None if posterior is None else jnp.asarray(posterior[b], dtype=jnp.float32)
        log_w, acc = one(key, args, kwargs, zp)
        parts.append((np.asarray(log_w), np.asarray(acc)))
    return _finish(parts, reverse, t0)

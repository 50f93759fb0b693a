"""AIS and BDMC for Pyro model+guide pairs: the algorithm of
:mod:`.ais_jax` in torch.

The schedule, the options, the site checks and the estimates on log weights are shared with
the JAX version (:mod:`~varbayes.inference.evidence.annealing`,
:mod:`~varbayes.inference.evidence.sites`); only the HMC transition and the densities are
written again, with torch autograd for the gradients and an outer ``_particles`` plate for
the C chains.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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
from varbayes.inference.evidence.sites import (
    latent_sites,
    pyro_particle_plate,
    split_terms,
    unflatten,
)
from varbayes.models.errors import check

TorchDensity = Callable[[Any], Any]
"""z (C, M, d) tensor -> (C, M) tensor."""


def _value_and_grad(log_f: TorchDensity, q: Any) -> tuple[Any, Any]:
    import torch

    q = q.detach().requires_grad_(True)
    f = log_f(q)
    if not f.requires_grad:  # a density that does not depend on z (e.g. ImproperUniform)
        return f.detach(), torch.zeros_like(q)
    (g,) = torch.autograd.grad(f.sum(), q)
    return f.detach(), g


def evaluate(z: Any, log_p0: TorchDensity, log_joint: TorchDensity) -> Point:
    """The :class:`Point` at z (C, M, d)."""
    l0, g0 = _value_and_grad(log_p0, z)
    lj, gj = _value_and_grad(log_joint, z)
    return Point(z.detach(), l0, lj, g0, gj)


def hmc_move(start: Point, beta: float, step_size: Any, log_p0: TorchDensity,
             log_joint: TorchDensity, n_leapfrog: int, jitter: float = JITTER
             ) -> tuple[Point, Any]:
    """One HMC transition per (chain, datapoint) on f_β = p₀^{1−β} p(x, ·)^β, unit mass, step
    size jittered by ±jitter (relative), as :func:`.ais_jax.hmc_kernel`: the start's values
    come with ``start`` and the last leapfrog step's with the returned point, so a transition
    costs ``n_leapfrog`` forward and backward passes. Returns (the new point, accept (C, M))."""
    import torch

    def log_f(q: Any) -> Any:
        a = log_p0(q)
        return a + beta * (log_joint(q) - a)

    eps = (step_size * (1.0 + jitter * (2 * torch.rand_like(step_size) - 1)))[..., None]
    p0 = torch.randn_like(start.z)
    f0, g = tempered(start, beta)
    q, p = start.z, p0 + 0.5 * eps * g
    for _ in range(n_leapfrog - 1):
        q = q + eps * p
        p = p + eps * _value_and_grad(log_f, q)[1]
    end = evaluate(q + eps * p, log_p0, log_joint)
    f1, g = tempered(end, beta)
    p = p + 0.5 * eps * g
    log_ratio = (f1 - 0.5 * (p**2).sum(-1)) - (f0 - 0.5 * (p0**2).sum(-1))
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio,
                            torch.full_like(log_ratio, -torch.inf))
    accept = torch.exp(torch.clamp(log_ratio, max=0.0))
    take = torch.rand_like(accept) < accept

    def pick(new: Any, old: Any) -> Any:
        return torch.where(take.reshape(take.shape + (1,) * (new.dim() - take.dim())), new, old)

    return Point(*(pick(n, o) for n, o in zip(end, start, strict=True))), accept


def run(z0: Any, betas: np.ndarray, log_p0: TorchDensity, log_joint: TorchDensity,
        options: AISOptions, step_sizes: Any = None) -> tuple[Any, Any, Any]:
    """The chain along ``betas`` from z0 (C, M, d), as :func:`.ais_jax.run`.

    Returns (log_w (C, M), accept (T−1, C, M), step sizes used (T−1, C, M)).
    """
    import torch

    at = evaluate(z0, log_p0, log_joint)
    C, M = at.z.shape[:2]
    log_w = at.z.new_zeros(C, M)
    eps = at.z.new_full((C, M), options.step_size)
    accepts, used = [], []
    T = len(betas) - 1
    for t in range(1, T + 1):
        b0, b1 = float(betas[t - 1]), float(betas[t])
        log_w = log_w + (b1 - b0) * (at.log_joint - at.log_p0)
        if t == T:
            break
        if step_sizes is not None:
            eps = step_sizes[t - 1].expand(C, M)
        used.append(eps)
        at, accept = hmc_move(at, b1, eps, log_p0, log_joint, options.n_leapfrog)
        accepts.append(accept)
        if step_sizes is None:
            eps = torch.clamp(eps * torch.exp(options.adapt_rate
                                              * (accept - options.target_accept)), 1e-4, 10.0)
    stack = (lambda a: torch.stack(a) if a else at.z.new_zeros(0, C, M))  # noqa: E731
    return log_w, stack(accepts), stack(used)


def adapted_run(z0: Any, betas: np.ndarray,
                densities: Callable[[int], tuple[Any, ...]],
                options: AISOptions, pilot_chains: int = PILOT_CHAINS) -> tuple[Any, Any]:
    """Pilot chains adapt the step sizes, the other chains run with them frozen (as
    :func:`.ais_jax.adapted_run`); ``densities(c)`` starts with (log_p0, log_joint) over c
    chains (as :func:`pyro_densities`).
    Returns (log_w (C, M), accept (T−1, C, M))."""
    import torch

    _, _, eps = run(z0[:pilot_chains], betas, *densities(pilot_chains)[:2], options)
    fixed = torch.exp(torch.log(eps).mean(1)) if len(eps) else None  # (T−1, M)
    rest = z0[pilot_chains:]
    log_w, accept, _ = run(rest, betas, *densities(len(rest))[:2], options, fixed)
    return log_w, accept


def pyro_densities(model: Callable[..., None], guide: Callable[..., None], args: tuple,
                   kwargs: dict, chains: int, *, init: str = "prior", plate: str = "data"
                   ) -> tuple[TorchDensity, TorchDensity, Callable[[], Any],
                              list[tuple[str, tuple[int, ...]]]]:
    """(log_p0, log_joint, sample_p0 () -> (C, M, d), latent sites) for one batch."""
    import pyro
    import torch

    tr = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    sites = latent_sites(tr.nodes.values(), plate)
    names = [n for n, _ in sites]
    vec, reduce = pyro_particle_plate(tr.nodes.values(), chains)

    def terms(fn: Callable[..., None], z: Any) -> tuple[Any, Any]:
        conditioned = pyro.poutine.condition(vec(fn), data=unflatten(z, sites))
        t = pyro.poutine.trace(conditioned).get_trace(*args, **kwargs)
        return split_terms(t.nodes.values(), plate, names, reduce)

    def log_joint(z: Any) -> Any:
        a, b = terms(model, z)
        return a + b

    src = model if init == "prior" else guide
    if init == "guide":
        gtr = pyro.poutine.trace(guide).get_trace(*args, **kwargs)
        check(sorted(n for n, _ in latent_sites(gtr.nodes.values(), plate)) == sorted(names),
              "the guide must sample exactly the model's latent sites")

    def log_p0(z: Any) -> Any:
        return terms(src, z)[0]

    def sample() -> Any:
        with torch.no_grad():
            t = pyro.poutine.trace(vec(src)).get_trace(*args, **kwargs)
        vals = [t.nodes[n]["value"] for n in names]
        vals = [v.expand(chains, *v.shape[-1 - len(s):]) if v.dim() < 2 + len(s) else v
                for v, (_, s) in zip(vals, sites, strict=True)]
        return torch.cat([v.reshape(chains, v.shape[1], -1) for v in vals], -1)

    return log_p0, log_joint, sample, sites


def pyro_ais(model: Callable[..., None], guide: Callable[..., None],
             batches: Iterable[tuple[tuple, dict]], options: AISOptions = DEFAULTS, *,
             seed: int = 0, plate: str = "data", posterior: Sequence[Any] | None = None,
             progress: Callable[[Iterable], Iterable] | None = None) -> AISResult:
    """AIS (or, with ``posterior``, reverse BDMC) estimates for a Pyro model+guide; the same
    contract as :func:`.ais_jax.numpyro_ais`."""
    import pyro
    import torch

    reverse = posterior is not None
    betas = path_betas(options, reverse)
    pyro.set_rng_seed(seed)
    n = options.chains + PILOT_CHAINS
    t0 = time.perf_counter()
    parts = []
    it = progress(list(batches)) if progress else batches
    for b, (args, kwargs) in enumerate(it):
        densities = functools.partial(pyro_densities, model, guide, args, kwargs,
                                      init=options.init, plate=plate)
        if reverse:
            zp = torch.as_tensor(np.asarray(posterior[b]), dtype=torch.float32)
            z0 = zp.expand(n, *zp.shape).clone()
        else:
            z0 = densities(n)[2]()
        log_w, accept = adapted_run(z0, betas, densities, options)
        parts.append((log_w.detach().numpy(),
                      accept.mean(dim=(1, 2)).detach().numpy() if len(accept) else
                      np.zeros(0)))
    return finish(parts, reverse, t0)

"""AIS and BDMC for Pyro model+guide pairs: the algorithm of
:mod:`.ais_jax` in torch.

The schedule, the options, the site checks and the estimates on log weights are shared with
the JAX version (:mod:`~varbayes.inference.evidence.annealing`,
:mod:`~varbayes.inference.evidence.sites`); only the HMC transition and the densities are
written again, with torch autograd for the gradients and an outer ``_particles`` plate for
the C chains.
"""

from __future__ import annotations

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
    finish,
    path_betas,
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


def hmc_step(z: Any, step_size: Any, log_f: TorchDensity, n_leapfrog: int,
             jitter: float = JITTER) -> tuple[Any, Any]:
    """One HMC transition per (chain, datapoint), unit mass, step size jittered by ±jitter
    (relative): (new z (C, M, d), accept (C, M)); as :func:`.ais_jax.hmc_step`."""
    import torch

    def grad(q: Any) -> tuple[Any, Any]:
        q = q.detach().requires_grad_(True)
        f = log_f(q)
        (g,) = torch.autograd.grad(f.sum(), q)
        return f.detach(), g

    eps = (step_size * (1.0 + jitter * (2 * torch.rand_like(step_size) - 1)))[..., None]
    p0 = torch.randn_like(z)
    f0, g = grad(z)
    q, p = z.detach(), p0
    for _ in range(n_leapfrog):
        p = p + 0.5 * eps * g
        q = q + eps * p
        f1, g = grad(q)
        p = p + 0.5 * eps * g
    log_ratio = (f1 - 0.5 * (p**2).sum(-1)) - (f0 - 0.5 * (p0**2).sum(-1))
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio,
                            torch.full_like(log_ratio, -torch.inf))
    accept = torch.exp(torch.clamp(log_ratio, max=0.0))
    take = torch.rand_like(accept) < accept
    return torch.where(take[..., None], q, z.detach()), accept


def run(z0: Any, betas: np.ndarray, log_p0: TorchDensity, log_joint: TorchDensity,
        options: AISOptions, step_sizes: Any = None) -> tuple[Any, Any, Any]:
    """The chain along ``betas`` from z0 (C, M, d), as :func:`.ais_jax.run`.

    Returns (log_w (C, M), accept (T−1, C, M), step sizes used (T−1, C, M)).
    """
    import torch

    z = z0.detach()
    C, M = z.shape[:2]
    log_w = z.new_zeros(C, M)
    eps = z.new_full((C, M), options.step_size)
    accepts, used = [], []
    T = len(betas) - 1
    for t in range(1, T + 1):
        b0, b1 = float(betas[t - 1]), float(betas[t])
        with torch.no_grad():
            l0 = log_p0(z)
            log_w = log_w + (b1 - b0) * (log_joint(z) - l0)
        if t == T:
            break
        if step_sizes is not None:
            eps = step_sizes[t - 1].expand(C, M)

        def log_f(q: Any, b: float = b1) -> Any:
            a = log_p0(q)
            return a + b * (log_joint(q) - a)

        used.append(eps)
        z, accept = hmc_step(z, eps, log_f, options.n_leapfrog)
        accepts.append(accept)
        if step_sizes is None:
            eps = torch.clamp(eps * torch.exp(options.adapt_rate
                                              * (accept - options.target_accept)), 1e-4, 10.0)
    stack = (lambda a: torch.stack(a) if a else z.new_zeros(0, C, M))  # noqa: E731
    return log_w, stack(accepts), stack(used)


def adapted_run(z0: Any, betas: np.ndarray, log_p0: TorchDensity, log_joint: TorchDensity,
                options: AISOptions, pilot_chains: int = PILOT_CHAINS) -> tuple[Any, Any]:
    """Pilot chains adapt the step sizes, the other chains run with them frozen (as
    :func:`.ais_jax.adapted_run`). Returns (log_w (C, M), accept (T−1, C, M))."""
    import torch

    _, _, eps = run(z0[:pilot_chains], betas, log_p0, log_joint, options)
    fixed = torch.exp(torch.log(eps).mean(1)) if len(eps) else None  # (T−1, M)
    log_w, accept, _ = run(z0[pilot_chains:], betas, log_p0, log_joint, options, fixed)
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
        log_p0, log_joint, sample, _ = pyro_densities(model, guide, args, kwargs, n,
                                                      init=options.init, plate=plate)
        if reverse:
            zp = torch.as_tensor(np.asarray(posterior[b]), dtype=torch.float32)
            z0 = zp.expand(n, *zp.shape).clone()
        else:
            z0 = sample()
        # the densities carry n chains; the pilot and estimating runs use slices of them
        log_w, accept = _sliced_run(z0, betas, log_p0, log_joint, options)
        parts.append((log_w.detach().numpy(),
                      accept.mean(dim=(1, 2)).detach().numpy() if len(accept) else
                      np.zeros(0)))
    return finish(parts, reverse, t0)


def _sliced_run(z0: Any, betas: np.ndarray, log_p0: TorchDensity, log_joint: TorchDensity,
                options: AISOptions) -> tuple[Any, Any]:
    """:func:`adapted_run` with densities built for all n = C + pilot chains at once: each
    run pads its chains back to n (the padding rows are never read)."""
    import torch

    n = z0.shape[0]

    def pad(f: TorchDensity) -> TorchDensity:
        def g(z: Any) -> Any:
            c = z.shape[0]
            if c == n:
                return f(z)
            full = torch.cat([z, z[:1].detach().expand(n - c, *z.shape[1:])], 0)
            return f(full)[:c]
        return g

    return adapted_run(z0, betas, pad(log_p0), pad(log_joint), options)

"""The marginal-likelihood estimator of the AEVB paper's appendix D (Kingma & Welling 2014),
for model+guide pairs with per-datapoint continuous latents (NumPyro models; a Pyro model is
refused with a clear error, since the HMC chains run in JAX).

Per datapoint x_i:

1. draw z_1..z_L from the posterior p(z|x_i) by HMC (each chain started at the best of
   ``init_draws`` guide draws by log p(x_i, z), step size
   adapted per datapoint during warm-up toward 0.65 acceptance, then frozen);
2. fit a density q(z) to the first half of the draws: here a full-covariance Gaussian;
3. on the other half, p̂(x_i) = (1/L' Σ_l q(z_l) / p(x_i, z_l))⁻¹.

It works because E_{p(z|x)}[q(z)/p(x, z)] = 1/p(x) for any normalized q. Jensen makes
log p̂ a stochastic *upper* bound. It is trustworthy only when q has lighter tails than the
posterior and fits it well: the fit's error grows with the latent dimension for a fixed
number of draws, and a q wider than the posterior somewhere gives the ratio infinite
variance (the harmonic-mean problem). The paper used it for latent dimensions below 5.
Fitting on one half and evaluating on the other keeps the draws that score q independent
of those that chose it. All log densities are in nats.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from varbayes.inference.backends import check_backend
from varbayes.inference.evidence import ais_jax
from varbayes.inference.evidence.annealing import AISOptions, log_mean_exp_stderr
from varbayes.models.errors import check


class HMCEvidenceOptions(NamedTuple):
    """Settings of the appendix-D estimator."""

    n_samples: int = 1000
    """L, posterior draws kept per datapoint (all chains together); half fit q."""
    n_warmup: int = 200
    """HMC transitions per chain that adapt the step size (discarded)."""
    chains: int = 4
    """HMC chains per datapoint."""
    n_leapfrog: int = 10
    step_size: float = 0.05
    target_accept: float = 0.65
    init_draws: int = 1
    """Guide draws per chain; each chain starts at the one with the highest log p(x, z).
    Raise it where the guide is far from the posterior (e.g. an untrained encoder): chains
    that never reach the posterior make the estimate far too low."""


class HMCEvidenceResult(NamedTuple):
    """Estimates per datapoint, in nats."""

    log_px: np.ndarray
    """(N,) −log-mean-exp_l [log q(z_l) − log p(x_i, z_l)] on the held-out draws."""
    stderr: np.ndarray
    """(N,) delta-method standard error over the held-out draws."""
    accept: float
    """mean HMC acceptance probability while sampling."""
    seconds: float


def check_options(o: HMCEvidenceOptions) -> None:
    """One-line :class:`VarbayesError` on a bad setting."""
    check(int(o.chains) >= 1, f"hmc needs chains >= 1, got {o.chains}")
    check(int(o.n_samples) >= 4 * int(o.chains),
          f"hmc needs n_samples >= 4 x chains ({4 * int(o.chains)}), got {o.n_samples}")
    check(int(o.n_warmup) >= 0, f"hmc needs n_warmup >= 0, got {o.n_warmup}")
    check(int(o.n_leapfrog) >= 1, f"hmc needs n_leapfrog >= 1, got {o.n_leapfrog}")
    check(o.step_size > 0, f"hmc step_size must be > 0, got {o.step_size}")
    check(int(o.init_draws) >= 1, f"hmc needs init_draws >= 1, got {o.init_draws}")


def gaussian_fit_logpdf(fit: Any, z: Any) -> Any:
    """Per-datapoint Gaussians fitted to ``fit`` (S, M, d), evaluated at z (L, M, d) -> (L, M)."""
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    S, _, d = fit.shape
    mu = fit.mean(0)  # (M, d)
    c = fit - mu
    cov = jnp.einsum("smi,smj->mij", c, c) / (S - 1) + 1e-6 * jnp.eye(d)
    L = jnp.linalg.cholesky(cov)  # (M, d, d)
    r = jnp.moveaxis(z - mu, 0, -1)  # (M, d, L)
    sol = solve_triangular(L, r, lower=True)  # (M, d, L)
    maha = (sol**2).sum(1).T  # (L, M)
    logdet = 2 * jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)).sum(-1)  # (M,)
    return -0.5 * (maha + logdet + d * jnp.log(2 * jnp.pi))


def best_starts(key: Any, sample: Callable[[Any, int], Any], log_joint: ais_jax.LogDensity,
                chains: int, n: int) -> Any:
    """Starting points (C, M, d): for each chain and datapoint, the best of ``n`` draws of
    ``sample(key, C)`` (C, M, d) by ``log_joint`` (C, M); memory O(C · M), not O(n)."""
    import jax
    import jax.numpy as jnp

    def score(z: Any) -> Any:
        return jnp.nan_to_num(log_joint(z), nan=-jnp.inf)  # a NaN never wins

    def better(best: tuple[Any, Any], k: Any) -> tuple[tuple[Any, Any], None]:
        z = sample(k, chains)
        lj = score(z)
        take = lj > best[1]
        return (jnp.where(take[..., None], z, best[0]), jnp.where(take, lj, best[1])), None

    k0, rest = jax.random.split(key)
    z0 = sample(k0, chains)
    (z, _), _ = jax.lax.scan(better, (z0, score(z0)), jax.random.split(rest, n - 1))
    return z


def posterior_draws(key: Any, z0: Any, log_joint: ais_jax.LogDensity, o: HMCEvidenceOptions
                    ) -> tuple[Any, Any]:
    """HMC draws (S, C, M, d) from z0 (C, M, d) after ``n_warmup`` adapting transitions, and
    the mean acceptance while sampling."""
    import jax
    import jax.numpy as jnp

    opts = AISOptions(n_leapfrog=o.n_leapfrog, target_accept=o.target_accept)

    def warm(carry: tuple[Any, Any], k: Any) -> tuple[tuple[Any, Any], None]:
        z, eps = carry
        z, a = ais_jax.hmc_step(k, z, eps, log_joint, o.n_leapfrog)
        eps = jnp.clip(eps * jnp.exp(opts.adapt_rate * (a - o.target_accept)), 1e-4, 10.0)
        return (z, eps), None

    k_warm, k_draw = jax.random.split(key)
    eps0 = jnp.full(z0.shape[:2], o.step_size, z0.dtype)
    (z, eps), _ = jax.lax.scan(warm, (z0, eps0), jax.random.split(k_warm, o.n_warmup))
    eps = jnp.broadcast_to(jnp.exp(jnp.log(eps).mean(0)), eps.shape)  # frozen per datapoint

    def draw(z: Any, k: Any) -> tuple[Any, tuple[Any, Any]]:
        z, a = ais_jax.hmc_step(k, z, eps, log_joint, o.n_leapfrog)
        return z, (z, a.mean())

    S = -(-int(o.n_samples) // int(o.chains))
    _, (zs, acc) = jax.lax.scan(draw, z, jax.random.split(k_draw, S))
    return zs, acc.mean()


def split_draws(zs: Any) -> tuple[Any, Any]:
    """Draws (S, C, M, d) of C chains -> (fit, held), each (S/2·C, M, d): alternate
    transitions of every chain, so both halves hold every chain's draws. (Splitting by
    chain instead would score q fitted to some chains on the others' draws, which fails
    when the chains have not met.)"""
    def flat(z: Any) -> Any:
        return z.reshape(z.shape[0] * z.shape[1], *z.shape[2:])

    return flat(zs[0::2]), flat(zs[1::2])


@functools.lru_cache(maxsize=16)
def _compiled(model: Callable[..., None], guide: Callable[..., None],
              options: HMCEvidenceOptions, plate: str) -> Callable[..., tuple[Any, Any]]:
    """The compiled per-batch estimate, kept across calls with the same model, guide and
    settings (a repeated evaluation, e.g. during training, compiles once)."""
    import equinox as eqx
    import jax

    @eqx.filter_jit
    def one(key: Any, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        """(log q(z) − log p(x, z) on the held-out draws (L', M), mean acceptance)."""
        d = ais_jax.numpyro_densities(model, guide, args, kwargs, init="guide", plate=plate)
        k0, k1 = jax.random.split(key)
        z0 = best_starts(k0, d.sample_p0, d.log_joint, options.chains, options.init_draws)
        zs, acc = posterior_draws(k1, z0, d.log_joint, options)
        fit, held = split_draws(zs)
        return gaussian_fit_logpdf(fit, held) - d.log_joint(held), acc

    return one


def hmc_evidence(model: Callable[..., None], guide: Callable[..., None],
                 batches: Iterable[tuple[tuple, dict]],
                 options: HMCEvidenceOptions | None = None, *, backend: str = "numpyro",
                 seed: int = 0, plate: str = "data",
                 progress: Callable[[Iterable], Iterable] | None = None) -> HMCEvidenceResult:
    """The appendix-D estimate of log p(x_i) (nats) for each datapoint of each batch.

    ``batches`` are ``(args, kwargs)`` as for the other estimators; the guide supplies the
    chains' starting points. Only ``backend="numpyro"`` exists: for a Pyro model write its
    NumPyro twin (same sites, same weights) and pass that.
    """
    check_backend(backend)
    check(backend == "numpyro",
          "the appendix-D HMC estimator runs on NumPyro models only: pass the model's NumPyro "
          "twin with the same weights and backend='numpyro' (varbayes evidence does this for "
          "Pyro VAE runs)")
    return numpyro_hmc_evidence(model, guide, batches, options, seed=seed, plate=plate,
                                progress=progress)


def numpyro_hmc_evidence(model: Callable[..., None], guide: Callable[..., None],
                         batches: Iterable[tuple[tuple, dict]],
                         options: HMCEvidenceOptions | None = None, *, seed: int = 0,
                         plate: str = "data",
                         progress: Callable[[Iterable], Iterable] | None = None
                         ) -> HMCEvidenceResult:
    """The appendix-D estimate of log p(x_i) for each datapoint of each batch."""
    import jax

    options = options or HMCEvidenceOptions()
    check_options(options)
    one = _compiled(model, guide, options, plate)
    t0 = time.perf_counter()
    ests, ses, accs = [], [], []
    it = progress(list(batches)) if progress else batches
    for b, (args, kwargs) in enumerate(it):
        r, acc = one(jax.random.fold_in(jax.random.key(seed), b), args, kwargs)
        est, se = log_mean_exp_stderr(np.asarray(r, dtype=np.float64))
        ests.append(-est)
        ses.append(se)
        accs.append(float(acc))
    return HMCEvidenceResult(np.concatenate(ests), np.concatenate(ses), float(np.mean(accs)),
                             time.perf_counter() - t0)

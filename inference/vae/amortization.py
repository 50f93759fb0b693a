"""The VAE latent posterior p(z|x) against the amortized q_φ(z|x): inference suboptimality.

For one decoder θ and datapoint x, with ELBO(q) = E_q[log p_θ(x, z) − log q(z)] (nats),

    log p(x) − ELBO(q_φ(·|x)) = KL(q_φ ‖ p(z|x))                     (the inference gap)
                              = [log p(x) − ELBO(q*)]  +  [ELBO(q*) − ELBO(q_φ)]
                                 approximation gap        amortization gap

where q* is the best *per-datapoint* diagonal Gaussian, found by maximizing the ELBO over its
mean and log standard deviation for this x alone (Cremer, Li & Duvenaud 2018, *Inference
Suboptimality in Variational Autoencoders*). The approximation gap is KL(q* ‖ p(z|x)): the
price of the Gaussian family. The amortization gap is what the encoder loses by predicting
q for every x from one network. What we *estimate*:

* ``log p(x)``: quadrature on a grid for latent size ≤ 2 (exact to ~1e-6 nats), else
  importance sampling with q* as the proposal (a stochastic lower bound);
* each ELBO: E_q[log p(x, z)] by a tensor-product Gauss–Hermite rule for latent size ≤ 2
  (deterministic), else a Monte-Carlo average with its standard error (same draws for q_φ
  and q*); the entropy term is exact;
* q*: Adam on that ELBO, started at the encoder's q_φ. It is a local optimum, so ELBO(q*)
  is a lower bound on the best ELBO in the family: the approximation gap is an upper bound
  and the amortization gap a lower bound (a negative value means the optimizer lost);
* KL(p ‖ q) = E_p[log p(x, z) − log q(z)] − log p(x), from NUTS draws of p(z|x).

All log densities come from the NumPyro twin of the run (the same weights,
:func:`.run.numpyro_twin`), through
:func:`varbayes.inference.evidence.sites.numpyro_log_joint`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from varbayes.models.errors import check

LogJoint = Callable[[Any], Any]
"""``z (M, K) -> (M,)``: per-datapoint log p(x_i, z_i) in nats."""


class Gaussians(NamedTuple):
    """Diagonal Gaussians, one per datapoint."""

    loc: np.ndarray
    """(M, K) means."""
    scale: np.ndarray
    """(M, K) standard deviations."""


class GapReport(NamedTuple):
    """Per-datapoint evidence, ELBOs and gaps, in nats; (M,) arrays."""

    log_px: np.ndarray
    log_px_method: str
    """``quadrature`` or ``is`` (with q* as the proposal)."""
    elbo_amortized: np.ndarray
    elbo_amortized_se: np.ndarray
    elbo_optimal: np.ndarray
    elbo_optimal_se: np.ndarray
    amortized: Gaussians
    optimal: Gaussians

    @property
    def inference_gap(self) -> np.ndarray:
        """log p(x) − ELBO(q_φ) = KL(q_φ ‖ p(z|x))."""
        return self.log_px - self.elbo_amortized

    @property
    def approximation_gap(self) -> np.ndarray:
        """log p(x) − ELBO(q*) = KL(q* ‖ p(z|x))."""
        return self.log_px - self.elbo_optimal

    @property
    def amortization_gap(self) -> np.ndarray:
        """ELBO(q*) − ELBO(q_φ)."""
        return self.elbo_optimal - self.elbo_amortized


def vae_log_joint(vae: Any, x: np.ndarray, c: np.ndarray | None = None) -> LogJoint:
    """log p_θ(x_i, z_i) per datapoint for a NumPyro VAE; x (M, D), c (M, C) or None."""
    import jax.numpy as jnp

    from varbayes.inference.evidence.sites import numpyro_log_joint
    from varbayes.models.vae import numpyro_model

    xj = jnp.asarray(x, dtype=jnp.float32)
    cj = None if c is None else jnp.asarray(c, dtype=jnp.float32)
    return numpyro_log_joint(numpyro_model.model, "z", vae, xj, cj)


def _gauss_log_prob(z: Any, loc: Any, scale: Any) -> Any:
    """Σ_k log N(z_k; loc_k, scale_k²), over the last axis."""
    import jax.numpy as jnp

    u = (z - loc) / scale
    return jnp.sum(-0.5 * u * u - jnp.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1)


def expectation_nodes(K: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal nodes (S, K) and weights (S,) for E_{ε~N(0,I)}[f(ε)] ≈ Σ_s w_s f(ε_s).

    Latent size K ≤ 2: a tensor-product Gauss–Hermite rule with ``n`` nodes per axis (exact
    for polynomials of degree < 2n, so the ELBO of a smooth log joint is accurate to far
    below Monte-Carlo error). K > 2: ``n`` Monte-Carlo draws with weights 1/n.
    """
    if K <= 2:
        t, w = np.polynomial.hermite_e.hermegauss(n)
        w = w / w.sum()
        grids = np.meshgrid(*[t] * K, indexing="ij")
        eps = np.stack([g.ravel() for g in grids], -1)
        wts = np.prod(np.stack(np.meshgrid(*[w] * K, indexing="ij"), -1).reshape(-1, K), -1)
        return eps, wts
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, K)), np.full(n, 1.0 / n)


def elbo(log_joint: LogJoint, q: Gaussians, *, n: int = 30, seed: int = 0
         ) -> tuple[np.ndarray, np.ndarray]:
    """ELBO of diagonal Gaussians q per datapoint and its standard error, (M,) each.

    E_q[log p(x, z)] by :func:`expectation_nodes` (Gauss–Hermite for K ≤ 2, with standard
    error 0; else ``n`` Monte-Carlo draws) plus the exact entropy Σ_k log σ_k + K/2 log(2πe).
    """
    import jax
    import jax.numpy as jnp

    K = q.loc.shape[-1]
    check(n >= 2, f"the ELBO needs n >= 2 nodes or draws, got {n}")
    eps, wts = expectation_nodes(K, n, seed)
    loc, scale = jnp.asarray(q.loc, jnp.float32), jnp.asarray(q.scale, jnp.float32)
    z = loc + scale * jnp.asarray(eps, jnp.float32)[:, None, :]  # (S, M, K)
    f = jax.jit(jax.vmap(log_joint))
    lj = np.concatenate([np.asarray(f(z[i:i + 2000]), np.float64)
                         for i in range(0, len(z), 2000)])  # (S, M)
    entropy = np.log(np.asarray(q.scale, np.float64)).sum(-1) + 0.5 * K * math.log(
        2 * math.pi * math.e)
    mean = wts @ lj
    se = (np.zeros(lj.shape[1]) if K <= 2 else lj.std(0, ddof=1) / math.sqrt(len(lj)))
    return mean + entropy, se


def optimize_gaussian(log_joint: LogJoint, start: Gaussians, *, steps: int = 1000,
                      n: int = 12, lr: float = 0.02, seed: int = 0) -> Gaussians:
    """q*: per-datapoint diagonal Gaussians maximizing the ELBO, with Adam.

    The expectation uses :func:`expectation_nodes` (fixed Gauss–Hermite nodes for K ≤ 2, so
    the objective is deterministic; fresh Monte-Carlo draws each step otherwise). The M
    datapoints are independent, so one optimizer on the sum of their ELBOs optimizes each.
    Starts from ``start`` (e.g. the encoder's q_φ); the step size decays tenfold.
    """
    import jax
    import jax.numpy as jnp
    import optax

    check(steps >= 1 and n >= 1, f"steps and n must be >= 1, got {steps}, {n}")
    K = start.loc.shape[-1]
    eps0, w0 = expectation_nodes(K, n, seed)
    gh = K <= 2
    params = (jnp.asarray(start.loc, jnp.float32),
              jnp.log(jnp.asarray(start.scale, jnp.float32)))
    opt = optax.adam(optax.exponential_decay(lr, steps, 0.1))
    vlj = jax.vmap(log_joint)

    def loss(p, key):
        loc, log_s = p
        eps = (jnp.asarray(eps0, jnp.float32) if gh
               else jax.random.normal(key, (n, K)))
        w = jnp.asarray(w0, jnp.float32)
        z = loc + jnp.exp(log_s) * eps[:, None, :]
        return -(w @ vlj(z) + log_s.sum(-1)).sum()

    def body(carry, key):
        p, s = carry
        g = jax.grad(loss)(p, key)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    run = jax.jit(lambda p, keys: jax.lax.scan(body, (p, opt.init(p)), keys)[0][0])
    loc, log_s = run(params, jax.random.split(jax.random.key(seed), steps))
    return Gaussians(np.asarray(loc, np.float64), np.exp(np.asarray(log_s, np.float64)))


def is_log_evidence(log_joint: LogJoint, q: Gaussians, *, k: int = 5000, seed: int = 1
                    ) -> np.ndarray:
    """log p̂(x_i) by importance sampling with proposal q, (M,): a stochastic lower bound."""
    import jax
    import jax.numpy as jnp

    from varbayes.inference.evidence.importance import log_mean_exp

    loc, scale = jnp.asarray(q.loc, jnp.float32), jnp.asarray(q.scale, jnp.float32)
    z = loc + scale * jax.random.normal(jax.random.key(seed), (k, *loc.shape))
    f = jax.jit(jax.vmap(lambda zz: log_joint(zz) - _gauss_log_prob(zz, loc, scale)))
    return log_mean_exp(np.asarray(f(z), dtype=np.float64), axis=0)


class Grid(NamedTuple):
    """The exact posterior of a 1-D or 2-D latent on a grid, per datapoint."""

    axes: np.ndarray
    """(M, n, K) grid coordinates per datapoint and axis."""
    log_post: np.ndarray
    """(M, n) for K = 1, (M, n, n) for K = 2: log p(z|x) at the grid points (density)."""
    mean: np.ndarray
    """(M, K) posterior means."""
    sd: np.ndarray
    """(M, K) posterior standard deviations."""
    log_px: np.ndarray
    """(M,) log p(x) by the midpoint rule."""


def posterior_grid(log_joint: LogJoint, center: Gaussians, *, n: int = 200,
                   width: float = 8.0) -> Grid:
    """p(z|x) on an ``n``-per-axis grid spanning ``center.loc ± width·center.scale``.

    Pass a guess close to the posterior (e.g. q*); the caller should check that the grid
    holds the mass (compare ``log_px`` with
    :func:`varbayes.inference.evidence.quadrature.quadrature`).
    """
    import jax
    from scipy.special import logsumexp

    M, K = center.loc.shape
    check(K in (1, 2), f"a posterior grid needs latent size 1 or 2, got {K}")
    half = width * center.scale  # (M, K)
    t = (np.arange(n) + 0.5) / n
    axes = (center.loc - half)[:, None, :] + t[None, :, None] * (2 * half)[:, None, :]
    if K == 1:
        pts = axes.transpose(1, 0, 2)  # (n, M, 1)
    else:
        a0 = np.repeat(axes[:, :, 0], n, axis=1)  # (M, n*n), first axis slow
        a1 = np.tile(axes[:, :, 1], (1, n))
        pts = np.stack([a0, a1], -1).transpose(1, 0, 2)  # (n*n, M, 2)
    f = jax.jit(jax.vmap(log_joint))
    vals = np.concatenate([np.asarray(f(pts[i:i + 4000].astype(np.float32)), np.float64)
                           for i in range(0, len(pts), 4000)]).T  # (M, G)
    log_vol = np.log(2 * half / n).sum(-1)  # (M,)
    log_px = logsumexp(vals, axis=1) + log_vol
    w = np.exp(vals - logsumexp(vals, axis=1, keepdims=True))  # (M, G)
    p = pts.transpose(1, 0, 2)  # (M, G, K)
    mean = (w[..., None] * p).sum(1)
    sd = np.sqrt((w[..., None] * (p - mean[:, None]) ** 2).sum(1))
    shape = (M, n) if K == 1 else (M, n, n)
    return Grid(axes, (vals - log_px[:, None]).reshape(shape), mean, sd, log_px)


def gaps(log_joint: LogJoint, amortized: Gaussians, *, steps: int = 1000, n_elbo: int = 30,
         k_is: int = 5000, seed: int = 0) -> tuple[GapReport, Grid | None]:
    """The inference, approximation and amortization gaps per datapoint (see module doc).

    Returns the report and, for latent size ≤ 2, the posterior grid (log p(x) by quadrature).
    """
    from varbayes.inference.evidence.quadrature import quadrature

    optimal = optimize_gaussian(log_joint, amortized, steps=steps, seed=seed)
    ea, ea_se = elbo(log_joint, amortized, n=n_elbo, seed=seed + 1)
    eo, eo_se = elbo(log_joint, optimal, n=n_elbo, seed=seed + 1)  # common random numbers
    M, K = amortized.loc.shape
    grid = None
    if K <= 2:
        log_px, method = quadrature(log_joint, K, M).log_px, "quadrature"
        grid = posterior_grid(log_joint, optimal)
    else:
        log_px, method = is_log_evidence(log_joint, optimal, k=k_is, seed=seed + 3), "is"
    return GapReport(log_px, method, ea, ea_se, eo, eo_se, amortized, optimal), grid


def kl_p_q(log_joint_draws: np.ndarray, z: np.ndarray, q: Gaussians, log_px: np.ndarray
           ) -> np.ndarray:
    """KL(p(z|x) ‖ q) per datapoint, (M,), from posterior draws z (S, M, K).

    ``log_joint_draws`` (S, M) holds log p(x, z_s) at those draws;
    KL = mean_s[log p(x, z_s) − log q(z_s)] − log p(x).
    """
    return (log_joint_draws - log_density(z, q)).mean(0) - log_px


def log_density(z: np.ndarray, q: Gaussians) -> np.ndarray:
    """log q(z_i) of diagonal Gaussians per datapoint, (..., M), for z (..., M, K); nats."""
    u = (z - q.loc) / q.scale
    return (-0.5 * u * u - np.log(q.scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def latent_draws(idata: Any) -> np.ndarray:
    """NUTS draws of ``z`` from InferenceData, flattened to (S, M, K)."""
    z = np.asarray(idata.posterior["z"].values, dtype=np.float64)
    return z.reshape(-1, *z.shape[2:])


def plot_overlay(grid: Grid, draws: np.ndarray, report: GapReport, out: Any,
                 name: str = "latent_overlay.png", max_panels: int = 6) -> Any:
    """Per datapoint: exact posterior contours, NUTS draws, q_φ (red) and q* (green).

    Latent size 2 only; ``draws`` (S, M, 2). Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    from varbayes.inference.io import save_figure

    M = min(draws.shape[1], max_panels)
    check(draws.shape[-1] == 2, "the overlay plot needs latent size 2")
    fig, axs = plt.subplots(1, M, figsize=(3.0 * M, 3.1), squeeze=False)
    for i, ax in enumerate(axs[0]):
        a0, a1 = grid.axes[i, :, 0], grid.axes[i, :, 1]
        dens = np.exp(grid.log_post[i])
        ax.contour(a0, a1, dens.T, levels=6, colors="0.4", linewidths=0.8)
        ax.plot(draws[:400, i, 0], draws[:400, i, 1], ".", ms=2, color="tab:blue", alpha=0.4)
        for q, col, lab in ((report.amortized, "tab:red", "q_φ (encoder)"),
                            (report.optimal, "tab:green", "q* (per datapoint)")):
            for r in (1, 2):
                ax.add_patch(Ellipse(q.loc[i], 2 * r * q.scale[i, 0], 2 * r * q.scale[i, 1],
                                     fill=False, color=col, lw=1.2,
                                     label=lab if r == 1 else None))
        ax.set_title(f"x{i}: amort. gap {report.amortization_gap[i]:.2f}", fontsize=9)
        ax.set_xlabel("z₁")
        if i == 0:
            ax.set_ylabel("z₂")
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("p(z|x): grid contours (grey), NUTS draws (blue); 1σ/2σ ellipses of q",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, Path(out) / name)

"""Backend-independent evaluation of a trained VAE, in numpy, through the functions both
backend modules share (``encode``, ``decode``, ``log_likelihood``).

- :func:`elbo_b`: the per-datapoint ELBO with the analytic KL (estimator B of the paper).
- :func:`masked_log_likelihood`: log p(x_hidden | c) of a CVAE conditioned on the visible
  part of an image, by importance sampling with q(z|x, c) as the proposal, and its
  independent-pixel baseline :func:`independent_pixel_log_likelihood`.
- :func:`gradient_variance`: how noisy estimators A and B are (NumPyro VAE).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
from scipy.special import logsumexp

LOG_2PI = float(np.log(2 * np.pi))


def _log_normal(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Σ_k log N(z_k; μ_k, σ_k²) over the last axis."""
    return np.sum(-0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * LOG_2PI, axis=-1)


def elbo_b(mod: ModuleType, vae: Any, x: np.ndarray, c: np.ndarray | None,
           rng: np.random.Generator, batch_size: int = 1000) -> np.ndarray:
    """Per-datapoint ELBO (nats), (N,): log p(x|z) at one z ~ q(z|x) minus the analytic KL."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        cb = None if c is None else c[i:i + batch_size]
        mu, sigma = mod.encode(vae, xb, cb)
        z = (mu + sigma * rng.standard_normal(mu.shape)).astype(np.float32)
        kl = -0.5 * np.sum(1 + 2 * np.log(sigma) - mu**2 - sigma**2, axis=-1)
        out.append(mod.log_likelihood(vae, xb, z, cb).sum(-1) - kl)
    return np.concatenate(out)


class Inpainting(NamedTuple):
    """Result of :func:`masked_log_likelihood`."""

    log_lik: np.ndarray
    """(N,) IS estimate of log p(x_hidden | c) in nats, summed over hidden pixels."""
    filled: np.ndarray
    """(N, D) the images with the hidden pixels replaced by E[x_hidden | c] under the model
    (z from the prior p(z), so the fill never sees the hidden pixels)."""
    samples: np.ndarray
    """(S, N, D) fills from single prior draws z ~ p(z): E[x_hidden | z, c]."""
    ess: np.ndarray
    """(N,) effective sample size of the importance weights."""


def masked_log_likelihood(mod: ModuleType, vae: Any, x: np.ndarray, c: np.ndarray,
                          hidden: np.ndarray, rng: np.random.Generator, k: int = 500,
                          n_fill: int = 200, n_samples: int = 3) -> Inpainting:
    """log p(x_h | c) = log E_q[p(x_h|z, c) p(z) / q(z|x, c)], K importance samples each.

    Pixels are independent given z, so ∫ p(x_h, x_o | z, c) dx_o = p(x_h | z, c): the
    observed pixels' likelihood drops out. The estimate uses the hidden pixels (it scores
    them); the fills do not: they average E[x_h | z, c] over ``n_fill`` draws z ~ p(z).
    """
    mu, sigma = mod.encode(vae, x, c)                                     # (N, K)
    z = (mu + sigma * rng.standard_normal((k, *mu.shape))).astype(np.float32)  # (k, N, K)
    log_px = mod.log_likelihood(vae, x, z, c)[..., hidden].sum(-1)        # (k, N)
    log_w = log_px + _log_normal(z, 0.0, 1.0) - _log_normal(z, mu, sigma)
    log_lik = logsumexp(log_w, axis=0) - np.log(k)
    w = np.exp(log_w - logsumexp(log_w, axis=0))                          # (k, N)
    ess = 1.0 / np.sum(w**2, axis=0)
    z_prior = rng.standard_normal((max(n_fill, n_samples), *mu.shape)).astype(np.float32)
    means = mod.decode(vae, z_prior, c)                                   # (S, N, D)
    filled = np.array(x, dtype=np.float32, copy=True)
    filled[:, hidden] = means.mean(0)[:, hidden]
    samples = np.repeat(filled[None], n_samples, axis=0)
    samples[:, :, hidden] = means[:n_samples][:, :, hidden]
    return Inpainting(log_lik, filled, samples, ess)


def independent_pixel_log_likelihood(config: Any, x_train: np.ndarray, x: np.ndarray,
                                     hidden: np.ndarray) -> np.ndarray:
    """The baseline of :func:`masked_log_likelihood`: log p(x_hidden) (nats), (N,), under
    independent pixels fitted to ``x_train`` (N_train, D): Bernoulli with the pixel means
    (clipped to [1e-3, 1 − 1e-3]) for a Bernoulli decoder, else Gaussian with the pixel means
    and standard deviations (at least ``config.min_scale``)."""
    from scipy.stats import norm

    p = np.clip(x_train.mean(0), 1e-3, 1 - 1e-3)[hidden]
    if config.decoder == "bernoulli":
        return (x[:, hidden] * np.log(p) + (1 - x[:, hidden]) * np.log1p(-p)).sum(-1)
    sd = np.maximum(x_train.std(0)[hidden], config.min_scale)
    return norm.logpdf(x[:, hidden], p, sd).sum(-1)


def gradient_variance(vae: Any, x: np.ndarray, c: np.ndarray | None, elbo: str,
                      n_draws: int = 256, seed: int = 0) -> tuple[float, float]:
    """Total variance of the one-sample ELBO gradient over all parameters (NumPyro VAE).

    Returns ``(trace of the gradient covariance, squared norm of the mean gradient)`` over
    ``n_draws`` independent noise draws, for ``elbo="trace"`` (estimator A) or
    ``"meanfield"`` (estimator B), with the data plate unscaled (sum over ``x``).
    """
    import functools

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import Trace_ELBO, TraceMeanField_ELBO

    from varbayes.models.vae import numpyro_model as nm

    est = TraceMeanField_ELBO() if elbo == "meanfield" else Trace_ELBO()
    params = {"encoder$params": eqx.filter(vae.encoder, eqx.is_inexact_array),
              "decoder$params": eqx.filter(vae.decoder, eqx.is_inexact_array)}
    model = functools.partial(nm.model, vae)
    guide = functools.partial(nm.guide, vae)
    xj = jnp.asarray(x)
    cj = None if c is None else jnp.asarray(c)

    def grad(key: jax.Array) -> jax.Array:
        g = jax.grad(lambda p: est.loss(key, p, model, guide, xj, cj))(params)
        return jnp.concatenate([jnp.ravel(v) for v in jax.tree_util.tree_leaves(g)])

    with numpyro.validation_enabled(False):
        grads = jax.lax.map(grad, jax.random.split(jax.random.PRNGKey(seed), n_draws))
    grads = np.asarray(grads, dtype=np.float64)
    return float(grads.var(axis=0, ddof=1).sum()), float((grads.mean(0) ** 2).sum())

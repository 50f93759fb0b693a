"""Posterior-predictive quantities of a trained Bayesian VAE, backend-independent (numpy).

θ is drawn from q(θ) and plugged into the VAE of either backend (``vmod`` is
:mod:`varbayes.models.vae.pyro_model` or :mod:`varbayes.models.vae.numpyro_model`), so everything
here goes through the VAE's own ``build``, ``decode``, ``encode`` and ``log_likelihood``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from varbayes.models.bayesian_vae.config import sample_theta
from varbayes.models.vae.config import VAEConfig


def decoder_draws(vmod: ModuleType, config: VAEConfig, weights: dict[str, np.ndarray],
                  sigma: dict[str, np.ndarray] | None, n_theta: int,
                  rng: np.random.Generator) -> list[Any]:
    """``n_theta`` VAEs with the encoder of ``weights`` and decoders θ_s ~ q(θ).

    ``weights`` holds the encoder and μ of q(θ) (flat names); ``sigma`` None means a point
    estimate (a MAP VAE): one VAE with θ = μ is returned.
    """
    if sigma is None:
        return [vmod.build(config, weights)]
    loc = {k: weights[k] for k in sigma}
    return [vmod.build(config, {**weights, **sample_theta(loc, sigma, rng)})
            for _ in range(n_theta)]


class Uncertainty(NamedTuple):
    """Per-pixel predictive moments of a Bernoulli decoder at fixed z, each (N, D)."""

    mean: np.ndarray
    """p̄ = E_q(θ)[p(x_d = 1 | z, θ)], the predictive pixel probability."""
    epistemic: np.ndarray
    """Var_q(θ)[p(x_d = 1 | z, θ)]: the part of the variance due to not knowing θ."""
    aleatoric: np.ndarray
    """E_q(θ)[p(1 − p)]: Bernoulli noise that remains with θ known.
    epistemic + aleatoric = p̄(1 − p̄), the total predictive variance."""


def uncertainty(vmod: ModuleType, vaes: list[Any], z: np.ndarray,
                c: np.ndarray | None = None) -> Uncertainty:
    """Split the predictive variance of each pixel for latents z (N, K) by the law of
    total variance over θ ~ q(θ) (``vaes`` from :func:`decoder_draws`)."""
    p = np.stack([vmod.decode(v, z, c) for v in vaes]).astype(np.float64)  # (S, N, D)
    return Uncertainty(p.mean(0), p.var(0), (p * (1 - p)).mean(0))


def predictive_samples(vmod: ModuleType, vaes: list[Any], n: int, rng: np.random.Generator,
                       c: np.ndarray | None = None) -> np.ndarray:
    """E_q(θ)[E[x | z, θ]] for z ~ p(z): (n, D) images averaged over the θ draws."""
    z = rng.standard_normal((n, vaes[0].config.z_dim)).astype(np.float32)
    return np.mean([vmod.decode(v, z, c) for v in vaes], axis=0)

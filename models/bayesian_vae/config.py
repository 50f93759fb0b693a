"""What both Bayesian-VAE backends share: the prior and guide settings, the θ layout,
the initial variational parameters and the closed-form KL(q(θ) ‖ p(θ)).

θ is every decoder weight and bias of :func:`varbayes.models.vae.config.weight_shapes` (the
``dec.*`` entries). Each is one sample site ``theta.<name>`` (e.g. ``theta.dec.0.weight``) with the
prior N(0, s²) per entry, and the guide q(θ) = Π N(μ, σ²) with σ = softplus(ρ), stored as
the params ``theta.<name>.loc`` and ``theta.<name>.rho``. Nothing here imports torch or JAX.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from varbayes.models.errors import check
from varbayes.models.vae.config import VAEConfig, init_weights, weight_shapes


class BayesConfig(NamedTuple):
    """The prior over θ and the start of q(θ); plain values, so it round-trips JSON."""

    prior_scale: float = 1.0
    """s of the prior p(θ) = N(0, s² I) over every decoder weight and bias."""
    init_sigma: float = 1e-3
    """σ of q(θ) at the start (every entry); μ starts at the VAE's initial weights."""

    @classmethod
    def from_dict(cls, d: dict) -> BayesConfig:
        """Inverse of ``_asdict()``; checks the values."""
        return validate(cls(**{k: float(v) for k, v in d.items()}))


def validate(bayes: BayesConfig) -> BayesConfig:
    """Raise :class:`VarbayesError` naming the bad field; return it unchanged."""
    check(math.isfinite(bayes.prior_scale) and bayes.prior_scale > 0,
          f"--prior-scale must be > 0, got {bayes.prior_scale}: the prior N(0, s²) over the "
          "decoder weights needs a positive s such as 1")
    check(math.isfinite(bayes.init_sigma) and bayes.init_sigma > 0,
          f"--init-sigma must be > 0, got {bayes.init_sigma}: q(θ) starts at a small positive "
          "σ such as 1e-3")
    return bayes


def theta_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Decoder weight names (``dec.0.weight`` ...) → shapes, in site order."""
    return {k: v for k, v in weight_shapes(config).items() if k.startswith("dec.")}


def site(name: str) -> str:
    """The sample-site name of decoder weight ``name``: ``theta.<name>``."""
    return f"theta.{name}"


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + eˣ), stable."""
    return np.logaddexp(0.0, x)


def softplus_inv(y: float | np.ndarray) -> np.ndarray:
    """The ρ with softplus(ρ) = y > 0."""
    y = np.asarray(y, dtype=np.float64)
    return y + np.log(-np.expm1(-y))


def init_variational(config: VAEConfig, bayes: BayesConfig, seed: int
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Initial (μ, ρ) of q(θ), float32 dicts keyed by decoder weight name.

    μ is the VAE's initial decoder (:func:`varbayes.models.vae.config.init_weights`), so the
    Bayesian and the MAP VAE start from the same weights; σ = softplus(ρ) = ``bayes.init_sigma``.
    """
    w = init_weights(config, seed)
    rho = np.float32(softplus_inv(bayes.init_sigma))
    loc = {k: w[k] for k in theta_shapes(config)}
    return loc, {k: np.full(v.shape, rho, dtype=np.float32) for k, v in loc.items()}


def kl_normal(loc: np.ndarray, sigma: np.ndarray, prior_scale: float) -> float:
    """Σ KL(N(μ, σ²) ‖ N(0, s²)) = Σ [log(s/σ) + (σ² + μ²)/(2s²) − ½], nats."""
    loc = np.asarray(loc, np.float64)
    sigma = np.asarray(sigma, np.float64)
    s2 = prior_scale**2
    return float(np.sum(np.log(prior_scale / sigma) + (sigma**2 + loc**2) / (2 * s2) - 0.5))


def kl_weights(loc: dict[str, np.ndarray], sigma: dict[str, np.ndarray],
               prior_scale: float) -> float:
    """KL(q(θ) ‖ p(θ)) over every decoder weight, in nats (per pass over the data: the
    global term of the appendix-F bound enters once for the whole training set)."""
    return sum(kl_normal(loc[k], sigma[k], prior_scale) for k in loc)


def sample_theta(loc: dict[str, np.ndarray], sigma: dict[str, np.ndarray],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One draw θ ~ q(θ) as float32 numpy arrays."""
    return {k: (loc[k] + sigma[k] * rng.standard_normal(loc[k].shape)).astype(np.float32)
            for k in loc}


def variational_params(config: VAEConfig, bayes: BayesConfig,
                       weights: dict[str, np.ndarray] | None, rho: dict[str, np.ndarray] | None,
                       seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(μ, ρ) of q(θ) per decoder weight name (float32): μ from the flat VAE ``weights``
    and ``rho`` where given, else fresh from :func:`init_variational` with ``seed``."""
    validate(bayes)
    loc0, rho0 = init_variational(config, bayes, seed)
    loc = loc0 if weights is None else {k: np.asarray(weights[k], np.float32) for k in loc0}
    return loc, (rho0 if rho is None else {k: np.asarray(rho[k], np.float32) for k in rho0})

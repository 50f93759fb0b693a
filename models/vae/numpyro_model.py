"""The VAE as a NumPyro model+guide pair (Kingma & Welling 2013, section 3).

The mirror image of :mod:`.pyro_model`: the same names, the same signature
``(vae, x, c=None, n_data=None)`` and the same sites in the same order

- model: ``theta_prior`` (a factor, only with ``prior_precision > 0``), ``z``, ``x``;
- guide: ``z``.

The equinox networks enter through :func:`numpyro.contrib.module.eqx_module`, which
registers their arrays as the params ``decoder$params`` and ``encoder$params``. The
``data`` plate has ``size=N`` and ``subsample_size=M``; its indices are the M minibatch
positions (the minibatch is sliced outside), so NumPyro draws no random subsample and
scales every local log density by N/M.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import eqx_module

from varbayes.models.vae.config import VAEConfig, init_weights, validate
from varbayes.models.vae.eqx_nets import Decoder, Encoder, build_networks, network_weights

BACKEND = "numpyro"


class VAE(NamedTuple):
    """A configuration with its networks (the initial weights; trained ones via with_params)."""

    config: VAEConfig
    encoder: Encoder
    decoder: Decoder


def build(config: VAEConfig, weights: dict[str, np.ndarray] | None = None, seed: int = 0) -> VAE:
    """Networks for ``config``, from ``weights`` or from :func:`init_weights` with ``seed``."""
    validate(config)
    weights = init_weights(config, seed) if weights is None else weights
    return VAE(config, *build_networks(config, weights))


def log_weight_prior(decoder: Decoder, precision: float) -> jax.Array:
    """log N(θ; 0, λ⁻¹ I) over every decoder weight and bias θ, in nats."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(decoder, eqx.is_inexact_array))
    sq = sum(jnp.sum(p * p) for p in leaves)
    n = sum(p.size for p in leaves)
    return -0.5 * precision * sq + 0.5 * n * math.log(precision / (2 * math.pi))


def likelihood(config: VAEConfig, out: jax.Array, scale: jax.Array | None) -> dist.Distribution:
    """p(x|z) from the decoder output, one event of D pixels."""
    if config.decoder == "bernoulli":
        return dist.Bernoulli(logits=out).to_event(1)
    return dist.Normal(out, scale).to_event(1)


def _plate(n_data: int | None, M: int) -> numpyro.plate:
    with numpyro.handlers.substitute(data={"data": jnp.arange(M)}):
        return numpyro.plate("data", n_data or M, subsample_size=M)


def model(vae: VAE, x: jax.Array, c: jax.Array | None = None, n_data: int | None = None) -> None:
    """p_θ(x, z) = p(z) p_θ(x|z[, c]) with p(z) = N(0, I); x (M, D), c (M, C)."""
    config = vae.config
    M = x.shape[0]
    decoder = eqx_module("decoder", vae.decoder)
    if config.prior_precision > 0:
        numpyro.factor("theta_prior", log_weight_prior(decoder, config.prior_precision))
    with _plate(n_data, M):
        z = numpyro.sample("z", dist.Normal(jnp.zeros((M, config.z_dim)), 1.0).to_event(1))
        out, scale = decoder(z, c)  # (..., M, D)
        numpyro.sample("x", likelihood(config, out, scale), obs=x)


def guide(vae: VAE, x: jax.Array, c: jax.Array | None = None, n_data: int | None = None) -> None:
    """q_φ(z|x[, c]) = N(μ_φ(x), diag σ²_φ(x)); x (M, D), c (M, C)."""
    M = x.shape[0]
    encoder = eqx_module("encoder", vae.encoder)
    with _plate(n_data, M):
        loc, scale = encoder(x, c)  # (M, K) each
        numpyro.sample("z", dist.Normal(loc, scale).to_event(1))


def weights(vae: VAE) -> dict[str, np.ndarray]:
    """The flat weight dict (numpy float32) of ``vae``."""
    return network_weights(vae.encoder, vae.decoder)


def with_params(vae: VAE, params: dict[str, object]) -> VAE:
    """``vae`` with the weights trained by :func:`varbayes.inference.vi.svi.fit`
    (``encoder$params`` ...)."""
    enc = eqx.combine(params["encoder$params"], eqx.filter(vae.encoder, eqx.is_inexact_array,
                                                           inverse=True))
    dec = eqx.combine(params["decoder$params"], eqx.filter(vae.decoder, eqx.is_inexact_array,
                                                           inverse=True))
    return VAE(vae.config, enc, dec)


def _j(a: np.ndarray | None) -> jax.Array | None:
    return None if a is None else jnp.asarray(a, dtype=jnp.float32)


def encode(vae: VAE, x: np.ndarray, c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """μ(x), σ(x) as numpy (N, K)."""
    loc, scale = vae.encoder(_j(x), _j(c))
    return np.asarray(loc), np.asarray(scale)


def decode(vae: VAE, z: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    """Mean of p(x|z[, c]) as numpy (..., N, D): pixel probabilities or Gaussian means."""
    out, _ = vae.decoder(_j(z), _j(c))
    return np.asarray(jax.nn.sigmoid(out) if vae.config.decoder == "bernoulli" else out)


def log_likelihood(vae: VAE, x: np.ndarray, z: np.ndarray,
                   c: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel log p(x_d|z[, c]) in nats, (..., N, D), for z (..., N, K)."""
    out, scale = vae.decoder(_j(z), _j(c))
    return np.asarray(likelihood(vae.config, out, scale).base_dist.log_prob(_j(x)))

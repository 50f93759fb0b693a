"""The Bayesian VAE as a NumPyro model+guide pair (Kingma & Welling 2013, appendix F).

The mirror image of :mod:`.pyro_model`: the same names, the signature
``(bvae, x, c=None, n_data=None)`` and the same sites in the same order

- model: ``theta.dec.*`` (prior N(0, s²) per entry), ``z``, ``x``;
- guide: ``theta.dec.*`` (q(θ) = N(μ, softplus(ρ)²), params ``theta.<name>.loc/.rho``), ``z``.

θ is global (outside the ``data`` plate): its log p(θ) − log q(θ) enters each step once, the
local terms are scaled by N/M. The decoder is the VAE's equinox module with θ swapped in.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import eqx_module

from varbayes.models.bayesian_vae.config import (
    BayesConfig,
    site,
    softplus,
    theta_shapes,
    variational_params,
)
from varbayes.models.vae import numpyro_model as vae_model
from varbayes.models.vae.config import VAEConfig
from varbayes.models.vae.eqx_nets import Decoder, Encoder, Linear

BACKEND = "numpyro"


class BayesianVAE(NamedTuple):
    """Configuration, networks and the variational parameters of q(θ) (numpy float32)."""

    config: VAEConfig
    bayes: BayesConfig
    encoder: Encoder
    decoder: Decoder
    """Template module: its own weights are never used, θ is passed in at each call."""
    loc: dict[str, np.ndarray]
    """μ of q(θ) per decoder weight name (``dec.0.weight`` ...)."""
    rho: dict[str, np.ndarray]
    """ρ of q(θ), σ = softplus(ρ)."""


def build(config: VAEConfig, bayes: BayesConfig, weights: dict[str, np.ndarray] | None = None,
          rho: dict[str, np.ndarray] | None = None, seed: int = 0) -> BayesianVAE:
    """From flat VAE ``weights`` (encoder and μ of the decoder) and ``rho``, or fresh."""
    loc, rho = variational_params(config, bayes, weights, rho, seed)
    vae = vae_model.build(config, weights, seed)
    return BayesianVAE(config, bayes, vae.encoder, vae.decoder, loc, rho)


def decode_with(bvae: BayesianVAE, theta: dict[str, jax.Array], z: jax.Array,
                c: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """The decoder's (logits or mean, σ) for z (..., M, K) with weights θ."""
    layers = {key: Linear(theta[f"dec.{key}.weight"], theta[f"dec.{key}.bias"])
              for key in bvae.decoder.layers}
    return eqx.tree_at(lambda d: d.layers, bvae.decoder, layers)(z, c)


def _plate(n_data: int | None, M: int) -> numpyro.plate:
    with numpyro.handlers.substitute(data={"data": jnp.arange(M)}):
        return numpyro.plate("data", n_data or M, subsample_size=M)


def model(bvae: BayesianVAE, x: jax.Array, c: jax.Array | None = None,
          n_data: int | None = None) -> None:
    """p(θ) Π p(zᵢ) p(xᵢ|zᵢ, θ[, cᵢ]); x (M, D), c (M, C)."""
    config, s = bvae.config, bvae.bayes.prior_scale
    M = x.shape[0]
    theta = {k: numpyro.sample(site(k), dist.Normal(jnp.zeros(shape), s).to_event(len(shape)))
             for k, shape in theta_shapes(config).items()}
    with _plate(n_data, M):
        z = numpyro.sample("z", dist.Normal(jnp.zeros((M, config.z_dim)), 1.0).to_event(1))
        out, scale = decode_with(bvae, theta, z, c)  # (M, D)
        numpyro.sample("x", vae_model.likelihood(config, out, scale), obs=x)


def guide(bvae: BayesianVAE, x: jax.Array, c: jax.Array | None = None,
          n_data: int | None = None) -> None:
    """q(θ) Π q(zᵢ|xᵢ[, cᵢ]); q(θ) mean-field Gaussian with σ = softplus(ρ)."""
    M = x.shape[0]
    for k, shape in theta_shapes(bvae.config).items():
        loc = numpyro.param(f"{site(k)}.loc", jnp.asarray(bvae.loc[k]))
        rho = numpyro.param(f"{site(k)}.rho", jnp.asarray(bvae.rho[k]))
        numpyro.sample(site(k), dist.Normal(loc, jax.nn.softplus(rho)).to_event(len(shape)))
    encoder = eqx_module("encoder", bvae.encoder)
    with _plate(n_data, M):
        zloc, zscale = encoder(x, c)  # (M, K) each
        numpyro.sample("z", dist.Normal(zloc, zscale).to_event(1))


def with_params(bvae: BayesianVAE, params: dict[str, object]) -> BayesianVAE:
    """``bvae`` with the params trained by :func:`varbayes.inference.vi.svi.fit`."""
    enc = eqx.combine(params["encoder$params"], eqx.filter(bvae.encoder, eqx.is_inexact_array,
                                                           inverse=True))
    loc = {k: np.asarray(params[f"{site(k)}.loc"], np.float32) for k in bvae.loc}
    rho = {k: np.asarray(params[f"{site(k)}.rho"], np.float32) for k in bvae.rho}
    return BayesianVAE(bvae.config, bvae.bayes, enc, bvae.decoder, loc, rho)


def posterior(bvae: BayesianVAE) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(μ, σ) of q(θ) as numpy dicts."""
    return bvae.loc, {k: softplus(v).astype(np.float32) for k, v in bvae.rho.items()}


def weights(bvae: BayesianVAE) -> dict[str, np.ndarray]:
    """Flat VAE weights: the encoder and the posterior mean μ of the decoder."""
    enc = {k: v for k, v in vae_model.network_weights(bvae.encoder, bvae.decoder).items()
           if k.startswith("enc.")}
    return {**enc, **bvae.loc}

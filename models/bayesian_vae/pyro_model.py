"""The Bayesian VAE as a Pyro model+guide pair (Kingma & Welling 2013, appendix F).

``model`` and ``guide`` have the signature ``(bvae, x, c=None, n_data=None)`` shared with
:mod:`.numpyro_model` and the same sample sites in the same order:

- model: ``theta.dec.*`` (one site per decoder weight/bias, prior N(0, s²)), ``z``, ``x``;
- guide: ``theta.dec.*`` (q(θ) = N(μ, softplus(ρ)²)), ``z`` (the VAE's encoder).

θ lies outside the ``data`` plate, so its log p(θ) − log q(θ) enters every step's objective
once, while the local terms inside the plate (size N, the M minibatch positions as
subsample) are scaled by N/M: each step's objective is an unbiased estimate of the
full-data bound f = Σᵢ (log p(xᵢ|zᵢ,θ) + log p(zᵢ) − log q(zᵢ|xᵢ)) + log p(θ) − log q(θ).
The decoder is the VAE's torch module's forward pass with θ in place of its weights.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from varbayes.models.bayesian_vae.config import (
    BayesConfig,
    site,
    softplus,
    theta_shapes,
    variational_params,
)
from varbayes.models.vae import pyro_model as vae_model
from varbayes.models.vae.config import VAEConfig
from varbayes.models.vae.torch_nets import Decoder, Encoder

BACKEND = "pyro"


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


def decode_with(bvae: BayesianVAE, theta: dict[str, torch.Tensor], z: torch.Tensor,
                c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The decoder's (logits or mean, σ) for z (..., M, K) with weights θ (2-D tensors).

    The forward pass of :class:`varbayes.models.vae.torch_nets.Decoder` (its activation, depth and
    output head) with θ in place of the module's weights; written out with
    ``torch.nn.functional.linear`` because ``functional_call`` cannot be JIT-traced.
    """
    d = bvae.decoder

    def linear(name: str, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, theta[f"dec.{name}.weight"], theta[f"dec.{name}.bias"])

    h = z if c is None else torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], dim=-1)
    for i in range(d.n_hidden):
        h = d.act(linear(str(i), h))
    out = linear("out", h)
    if not d.gaussian:
        return out, None
    return torch.sigmoid(out), d.min_scale + nn.functional.softplus(linear("scale", h))


def model(bvae: BayesianVAE, x: torch.Tensor, c: torch.Tensor | None = None,
          n_data: int | None = None) -> None:
    """p(θ) Π p(zᵢ) p(xᵢ|zᵢ, θ[, cᵢ]); x (M, D), c (M, C)."""
    config, s = bvae.config, bvae.bayes.prior_scale
    M = x.shape[0]
    theta = {k: pyro.sample(site(k), dist.Normal(x.new_zeros(shape), s, validate_args=False)
                            .to_event(len(shape)))
             for k, shape in theta_shapes(config).items()}
    loc = x.new_zeros((M, config.z_dim))
    with pyro.plate("data", n_data or M, subsample=torch.arange(M)):
        z = pyro.sample("z", dist.Normal(loc, 1.0 + loc, validate_args=False).to_event(1))
        out, scale = decode_with(bvae, theta, z, c)  # (M, D)
        pyro.sample("x", vae_model.likelihood(config, out, scale), obs=x)


def guide(bvae: BayesianVAE, x: torch.Tensor, c: torch.Tensor | None = None,
          n_data: int | None = None) -> None:
    """q(θ) Π q(zᵢ|xᵢ[, cᵢ]); q(θ) mean-field Gaussian with σ = softplus(ρ)."""
    M = x.shape[0]
    for k, shape in theta_shapes(bvae.config).items():
        loc = pyro.param(f"{site(k)}.loc", lambda k=k: torch.tensor(bvae.loc[k]))
        rho = pyro.param(f"{site(k)}.rho", lambda k=k: torch.tensor(bvae.rho[k]))
        pyro.sample(site(k), dist.Normal(loc, torch.nn.functional.softplus(rho),
                                         validate_args=False).to_event(len(shape)))
    encoder = pyro.module("encoder", bvae.encoder)
    with pyro.plate("data", n_data or M, subsample=torch.arange(M)):
        zloc, zscale = encoder(x, c)  # (M, K) each
        pyro.sample("z", dist.Normal(zloc, zscale, validate_args=False).to_event(1))


def with_params(bvae: BayesianVAE, params: dict[str, object]) -> BayesianVAE:
    """``bvae`` with the params trained by :func:`varbayes.inference.vi.svi.fit` (a param-store
    dict)."""
    enc = {f"enc.{k.partition('$$$')[2].removeprefix('layers.')}":
           torch.as_tensor(v).detach().numpy() for k, v in params.items()
           if k.startswith("encoder$$$")}
    get = {k: torch.as_tensor(v).detach().numpy().astype(np.float32)
           for k, v in params.items()}
    loc = {k: get[f"{site(k)}.loc"] for k in bvae.loc}
    rho = {k: get[f"{site(k)}.rho"] for k in bvae.rho}
    return build(bvae.config, bvae.bayes, {**enc, **loc}, rho)


def posterior(bvae: BayesianVAE) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(μ, σ) of q(θ) as numpy dicts."""
    return bvae.loc, {k: softplus(v).astype(np.float32) for k, v in bvae.rho.items()}


def weights(bvae: BayesianVAE) -> dict[str, np.ndarray]:
    """Flat VAE weights: the encoder and the posterior mean μ of the decoder."""
    enc = {k: v for k, v in vae_model.network_weights(bvae.encoder, bvae.decoder).items()
           if k.startswith("enc.")}
    return {**enc, **bvae.loc}

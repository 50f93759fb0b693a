"""The VAE as a Pyro model+guide pair (Kingma & Welling 2013, section 3).

``model`` and ``guide`` have the signature ``(vae, x, c=None, n_data=None)`` shared with
:mod:`.numpyro_model` and the same sample sites in the same order:

- model: ``theta_prior`` (a factor, only with ``prior_precision > 0``), ``z``, ``x``;
- guide: ``z``.

``x`` is a minibatch (M, D) and ``n_data`` the full data size N: the ``data`` plate has
``size=N`` with the M minibatch positions as its subsample, so every local log density is
scaled by N/M and the ELBO is the full-data estimator. ``c`` (M, C) is the conditioning
vector of a conditional VAE (None otherwise).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from varbayes.models.vae.config import VAEConfig, init_weights, validate
from varbayes.models.vae.torch_nets import Decoder, Encoder, build_networks, network_weights

BACKEND = "pyro"


class VAE(NamedTuple):
    """A configuration with its networks (the modules hold the current weights)."""

    config: VAEConfig
    encoder: Encoder
    decoder: Decoder


def build(config: VAEConfig, weights: dict[str, np.ndarray] | None = None, seed: int = 0) -> VAE:
    """Networks for ``config``, from ``weights`` or from :func:`init_weights` with ``seed``."""
    validate(config)
    weights = init_weights(config, seed) if weights is None else weights
    return VAE(config, *build_networks(config, weights))


def log_weight_prior(decoder: torch.nn.Module, precision: float) -> torch.Tensor:
    """log N(θ; 0, λ⁻¹ I) over every decoder weight and bias θ, in nats."""
    sq = sum((p * p).sum() for p in decoder.parameters())
    n = sum(p.numel() for p in decoder.parameters())
    return -0.5 * precision * sq + 0.5 * n * math.log(precision / (2 * math.pi))


def likelihood(config: VAEConfig, out: torch.Tensor,
               scale: torch.Tensor | None) -> dist.Distribution:
    """p(x|z) from the decoder output, one event of D pixels."""
    if config.decoder == "bernoulli":
        return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
    return dist.Normal(out, scale, validate_args=False).to_event(1)


def model(vae: VAE, x: torch.Tensor, c: torch.Tensor | None = None,
          n_data: int | None = None) -> None:
    """p_θ(x, z) = p(z) p_θ(x|z[, c]) with p(z) = N(0, I); x (M, D), c (M, C)."""
    config = vae.config
    M = x.shape[0]
    decoder = pyro.module("decoder", vae.decoder)
    if config.prior_precision > 0:
        pyro.factor("theta_prior", log_weight_prior(decoder, config.prior_precision))
    loc = x.new_zeros((M, config.z_dim))
    with pyro.plate("data", n_data or M, subsample=torch.arange(M)):
        z = pyro.sample("z", dist.Normal(loc, 1.0 + loc, validate_args=False).to_event(1))
        out, scale = decoder(z, c)  # (..., M, D)
        pyro.sample("x", likelihood(config, out, scale), obs=x)


def guide(vae: VAE, x: torch.Tensor, c: torch.Tensor | None = None,
          n_data: int | None = None) -> None:
    """q_φ(z|x[, c]) = N(μ_φ(x), diag σ²_φ(x)); x (M, D), c (M, C)."""
    M = x.shape[0]
    encoder = pyro.module("encoder", vae.encoder)
    with pyro.plate("data", n_data or M, subsample=torch.arange(M)):
        loc, scale = encoder(x, c)  # (M, K) each
        pyro.sample("z", dist.Normal(loc, scale, validate_args=False).to_event(1))


def weights(vae: VAE) -> dict[str, np.ndarray]:
    """The flat weight dict (numpy float32) of ``vae``."""
    return network_weights(vae.encoder, vae.decoder)


def with_params(vae: VAE, params: dict[str, object]) -> VAE:
    """``vae`` with the weights trained by :func:`varbayes.inference.vi.svi.fit` (a param-store
    dict)."""
    flat = {}
    for key, value in params.items():
        module, _, name = key.partition("$$$")
        prefix = {"encoder": "enc", "decoder": "dec"}[module]
        flat[f"{prefix}.{name.removeprefix('layers.')}"] = np.asarray(
            torch.as_tensor(value).detach().cpu().numpy())
    return build(vae.config, flat)


def _t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float32))


@torch.no_grad()
def encode(vae: VAE, x: np.ndarray, c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """μ(x), σ(x) as numpy (N, K)."""
    loc, scale = vae.encoder(_t(x), _t(c))
    return loc.numpy(), scale.numpy()


@torch.no_grad()
def decode(vae: VAE, z: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    """Mean of p(x|z[, c]) as numpy (..., N, D): pixel probabilities or Gaussian means."""
    out, _ = vae.decoder(_t(z), _t(c))
    return (torch.sigmoid(out) if vae.config.decoder == "bernoulli" else out).numpy()


@torch.no_grad()
def log_likelihood(vae: VAE, x: np.ndarray, z: np.ndarray,
                   c: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel log p(x_d|z[, c]) in nats, (..., N, D), for z (..., N, K)."""
    out, scale = vae.decoder(_t(z), _t(c))
    return likelihood(vae.config, out, scale).base_dist.log_prob(_t(x)).numpy()

"""The two-stochastic-layer VAE as a NumPyro model+guide pair: the mirror image of
:mod:`.pyro_model` (same signature, sites and order). The equinox networks enter through
:func:`numpyro.contrib.module.eqx_module` as the params ``q1$params`` ... ``px$params``.
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

from varbayes.models.errors import check
from varbayes.models.vae.eqx_nets import Decoder, Encoder, load_decoder, load_encoder
from varbayes.models.vae2.config import GROUPS, VAE2Config, networks, parts

BACKEND = "numpyro"


class VAE2(NamedTuple):
    """A configuration with its four networks (the initial weights; trained ones via
    :func:`with_params`)."""

    config: VAE2Config
    q1: Encoder
    q2: Encoder
    p1: Encoder
    px: Decoder


def build(config: VAE2Config, weights: dict[str, np.ndarray] | None = None,
          seed: int = 0) -> VAE2:
    """Networks for ``config``, from ``weights`` or from :func:`init_weights` with ``seed``."""
    return VAE2(config, **networks(config, weights, seed, load_encoder, load_decoder))


def _plate(n_data: int | None, M: int) -> numpyro.plate:
    with numpyro.handlers.substitute(data={"data": jnp.arange(M)}):
        return numpyro.plate("data", n_data or M, subsample_size=M)


def model(vae: VAE2, x: jax.Array, c: None = None,
          n_data: int | None = None) -> None:
    """p(z₂) p_θ(z₁|z₂) p_θ(x|z₁); x (M, D)."""
    check(c is None, "the two-layer VAE takes no conditioning input c")
    M, k2 = x.shape[0], vae.config.z_dims[1]
    p1, px = eqx_module("p1", vae.p1), eqx_module("px", vae.px)
    with _plate(n_data, M):
        z2 = numpyro.sample("z2", dist.Normal(jnp.zeros((M, k2)), 1.0).to_event(1))
        z1 = numpyro.sample("z1", dist.Normal(*p1(z2)).to_event(1))
        logits, _ = px(z1)
        numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def guide(vae: VAE2, x: jax.Array, c: None = None,
          n_data: int | None = None) -> None:
    """q_φ(z₁|x) q_φ(z₂|z₁); x (M, D)."""
    check(c is None, "the two-layer VAE takes no conditioning input c")
    q1, q2 = eqx_module("q1", vae.q1), eqx_module("q2", vae.q2)
    with _plate(n_data, x.shape[0]):
        z1 = numpyro.sample("z1", dist.Normal(*q1(x)).to_event(1))
        numpyro.sample("z2", dist.Normal(*q2(z1)).to_event(1))


def weights(vae: VAE2) -> dict[str, np.ndarray]:
    """The flat weight dict (numpy float32) of ``vae``."""
    out = {}
    for name, (_, side) in parts(vae.config).items():
        for key, layer in getattr(vae, name).layers.items():
            out[f"{name}.{side}.{key}.weight"] = np.array(layer.weight, dtype=np.float32)
            out[f"{name}.{side}.{key}.bias"] = np.array(layer.bias, dtype=np.float32)
    return out


def with_params(vae: VAE2, params: dict[str, object]) -> VAE2:
    """``vae`` with the weights trained by :func:`varbayes.inference.vi.svi.fit`
    (``q1$params`` ...)."""
    nets = {name: eqx.combine(params[f"{name}$params"],
                              eqx.filter(getattr(vae, name), eqx.is_inexact_array, inverse=True))
            for name in GROUPS}
    return VAE2(vae.config, **nets)


def encode(vae: VAE2, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """μ and σ of q(z₁|x), numpy (N, z₁)."""
    loc, scale = vae.q1(jnp.asarray(x, jnp.float32))
    return np.asarray(loc), np.asarray(scale)


def top_down(vae: VAE2, z2: np.ndarray) -> np.ndarray:
    """The mean of p(z₁|z₂), numpy (..., N, z₁)."""
    return np.asarray(vae.p1(jnp.asarray(z2, jnp.float32))[0])


def decode(vae: VAE2, z1: np.ndarray) -> np.ndarray:
    """Pixel probabilities of p(x|z₁), numpy (..., N, D)."""
    logits, _ = vae.px(jnp.asarray(z1, jnp.float32))
    return np.asarray(jax.nn.sigmoid(logits))

"""The two-stochastic-layer VAE as a Pyro model+guide pair (see :mod:`.config`).

Signature ``(vae, x, c=None, n_data=None)`` (``c``, a conditioning input, must be None: the
batches of a VAE run carry one), shared with :mod:`.numpyro_model`, and the same sites
in the same order: model ``z2``, ``z1``, ``x``; guide ``z1``, ``z2``. The ``data`` plate has
``size=N`` and the M minibatch positions as its subsample (scale N/M).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from varbayes.models.errors import check
from varbayes.models.vae.torch_nets import Decoder, Encoder, load_decoder, load_encoder
from varbayes.models.vae2.config import VAE2Config, networks, parts

BACKEND = "pyro"


class VAE2(NamedTuple):
    """A configuration with its four networks (the modules hold the current weights)."""

    config: VAE2Config
    q1: Encoder
    q2: Encoder
    p1: Encoder
    px: Decoder


def build(config: VAE2Config, weights: dict[str, np.ndarray] | None = None,
          seed: int = 0) -> VAE2:
    """Networks for ``config``, from ``weights`` or from :func:`init_weights` with ``seed``."""
    return VAE2(config, **networks(config, weights, seed, load_encoder, load_decoder))


def _plate(n_data: int | None, M: int) -> pyro.plate:
    return pyro.plate("data", n_data or M, subsample=torch.arange(M))


def model(vae: VAE2, x: torch.Tensor, c: None = None,
          n_data: int | None = None) -> None:
    """p(z₂) p_θ(z₁|z₂) p_θ(x|z₁); x (M, D)."""
    check(c is None, "the two-layer VAE takes no conditioning input c")
    M, k2 = x.shape[0], vae.config.z_dims[1]
    p1, px = pyro.module("p1", vae.p1), pyro.module("px", vae.px)
    loc = x.new_zeros((M, k2))
    with _plate(n_data, M):
        z2 = pyro.sample("z2", dist.Normal(loc, 1.0 + loc, validate_args=False).to_event(1))
        z1 = pyro.sample("z1", dist.Normal(*p1(z2), validate_args=False).to_event(1))
        logits, _ = px(z1)
        pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)


def guide(vae: VAE2, x: torch.Tensor, c: None = None,
          n_data: int | None = None) -> None:
    """q_φ(z₁|x) q_φ(z₂|z₁); x (M, D)."""
    check(c is None, "the two-layer VAE takes no conditioning input c")
    q1, q2 = pyro.module("q1", vae.q1), pyro.module("q2", vae.q2)
    with _plate(n_data, x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(*q1(x), validate_args=False).to_event(1))
        pyro.sample("z2", dist.Normal(*q2(z1), validate_args=False).to_event(1))


def weights(vae: VAE2) -> dict[str, np.ndarray]:
    """The flat weight dict (numpy float32) of ``vae``."""
    out = {}
    for name, (_, side) in parts(vae.config).items():
        for k, v in getattr(vae, name).state_dict().items():
            out[f"{name}.{side}.{k.removeprefix('layers.')}"] = v.detach().cpu().numpy().copy()
    return out


def with_params(vae: VAE2, params: dict[str, object]) -> VAE2:
    """``vae`` with the weights trained by :func:`varbayes.inference.vi.svi.fit`."""
    sides = {name: side for name, (_, side) in parts(vae.config).items()}
    flat = {}
    for key, value in params.items():
        module, _, name = key.partition("$$$")
        flat[f"{module}.{sides[module]}.{name.removeprefix('layers.')}"] = np.asarray(
            torch.as_tensor(value).detach().cpu().numpy())
    return build(vae.config, flat)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float32))


@torch.no_grad()
def encode(vae: VAE2, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """μ and σ of q(z₁|x), numpy (N, z₁)."""
    loc, scale = vae.q1(_t(x))
    return loc.numpy(), scale.numpy()


@torch.no_grad()
def top_down(vae: VAE2, z2: np.ndarray) -> np.ndarray:
    """The mean of p(z₁|z₂), numpy (..., N, z₁)."""
    return vae.p1(_t(z2))[0].numpy()


@torch.no_grad()
def decode(vae: VAE2, z1: np.ndarray) -> np.ndarray:
    """Pixel probabilities of p(x|z₁), numpy (..., N, D)."""
    logits, _ = vae.px(_t(z1))
    return torch.sigmoid(logits).numpy()

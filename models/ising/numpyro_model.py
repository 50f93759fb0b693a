"""The Ising denoising posterior as a NumPyro model, with its mean-field guide.

Sites, in order: ``z`` (±1 spins, (H, W)), the factor ``coupling`` and the observed ``x``;
the guide has the parameter ``logits`` and the site ``z``. The model's log density is exactly
:func:`.energy.log_joint`. Mirrors :mod:`.pyro_model` name for name.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from varbayes.models.ising.energy import Couplings, LocalField, pair_sum
from varbayes.models.ising.noise import Noise, data_logits


class Spin(dist.Distribution):
    """A ±1 variable with ``q(z) = sigmoid(z · logits)``; mean ``tanh(logits / 2)``."""

    arg_constraints = {"logits": constraints.real}  # noqa: RUF012
    support = constraints.integer_interval(-1, 1)

    def __init__(self, logits: jax.Array, *, validate_args: bool | None = None):
        self.logits = logits
        super().__init__(batch_shape=jnp.shape(logits), validate_args=validate_args)

    @property
    def mean(self) -> jax.Array:
        return jnp.tanh(0.5 * self.logits)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        shape = sample_shape + self.batch_shape
        u = jax.random.uniform(key, shape)
        return jnp.where(u < jax.nn.sigmoid(self.logits), 1.0, -1.0)

    def log_prob(self, value: jax.Array) -> jax.Array:
        return -jax.nn.softplus(-value * self.logits)


def likelihood(z: jax.Array, noise: Noise) -> dist.Distribution:
    """``p(x | z)`` per pixel: Normal(z, σ) or a flip with probability p, as one event."""
    if noise.kind == "gaussian":
        return dist.Normal(z, noise.scale).to_event(2)
    return Spin(z * math.log((1 - noise.scale) / noise.scale)).to_event(2)


def local_field(observed: jax.Array, noise: Noise) -> LocalField:
    """``ℓ_i(±1) = log p(x_i | z_i = ±1)`` (H, W) each, read off :func:`likelihood`."""
    ones = jnp.ones_like(observed)
    return LocalField(likelihood(-ones, noise).base_dist.log_prob(observed),
                      likelihood(ones, noise).base_dist.log_prob(observed))


def model(observed: jax.Array, couplings: Couplings, noise: Noise) -> jax.Array:
    """``p̃(z, x)``: spins ``z`` (H, W), the pairwise factor, then ``x`` observed (H, W)."""
    H, W = observed.shape
    z = numpyro.sample("z", Spin(jnp.zeros_like(observed)).to_event(2))  # (..., H, W)
    numpyro.factor("coupling", pair_sum(z, couplings) + H * W * math.log(2.0))
    numpyro.sample("x", likelihood(z, noise), obs=observed)
    return z


def guide(observed: jax.Array, couplings: Couplings, noise: Noise) -> jax.Array:
    """Mean-field ``q(z) = Π_i sigmoid(z_i a_i)``, logits ``a`` (H, W) started at ``2h``."""
    logits = numpyro.param("logits", data_logits(observed, noise))
    return numpyro.sample("z", Spin(logits).to_event(2))

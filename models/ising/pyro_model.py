"""The Ising denoising posterior as a Pyro model, with its mean-field guide.

Sites, in order: ``z`` (±1 spins, (H, W)), the factor ``coupling`` and the observed ``x``;
the guide has the parameter ``logits`` and the site ``z``. The model's log density is exactly
:func:`.energy.log_joint` (the uniform base measure on ``z`` is cancelled inside
the factor). Mirrors :mod:`.numpyro_model` name for name.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from varbayes.models.ising.energy import Couplings, LocalField, pair_sum
from varbayes.models.ising.noise import Noise, data_logits


class Spin(dist.TorchDistribution):
    """A ±1 variable with ``q(z) = sigmoid(z · logits)``; mean ``tanh(logits / 2)``."""

    arg_constraints = {"logits": constraints.real}  # noqa: RUF012
    support = constraints.integer_interval(-1, 1)
    has_rsample = False

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None):
        self.logits = logits
        super().__init__(batch_shape=logits.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> Spin:
        return Spin(self.logits.expand(torch.Size(batch_shape)))

    @property
    def mean(self) -> torch.Tensor:
        return torch.tanh(0.5 * self.logits)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
            return torch.where(u < torch.sigmoid(self.logits.expand(shape)), 1.0, -1.0)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return -torch.nn.functional.softplus(-value * self.logits)


def likelihood(z: torch.Tensor, noise: Noise) -> dist.Distribution:
    """``p(x | z)`` per pixel: Normal(z, σ) or a flip with probability p, as one event."""
    if noise.kind == "gaussian":
        return dist.Normal(z, noise.scale).to_event(2)
    return Spin(z * math.log((1 - noise.scale) / noise.scale)).to_event(2)


def local_field(observed: torch.Tensor, noise: Noise) -> LocalField:
    """``ℓ_i(±1) = log p(x_i | z_i = ±1)`` (H, W) each, read off :func:`likelihood`."""
    ones = torch.ones_like(observed)
    return LocalField(likelihood(-ones, noise).base_dist.log_prob(observed),
                      likelihood(ones, noise).base_dist.log_prob(observed))


def model(observed: torch.Tensor, couplings: Couplings, noise: Noise) -> torch.Tensor:
    """``p̃(z, x)``: spins ``z`` (H, W), the pairwise factor, then ``x`` observed (H, W)."""
    H, W = observed.shape
    z = pyro.sample("z", Spin(torch.zeros_like(observed)).to_event(2))  # (..., H, W)
    pyro.factor("coupling", pair_sum(z, couplings) + H * W * math.log(2.0))
    pyro.sample("x", likelihood(z, noise), obs=observed)
    return z


def guide(observed: torch.Tensor, couplings: Couplings, noise: Noise) -> torch.Tensor:
    """Mean-field ``q(z) = Π_i sigmoid(z_i a_i)``, logits ``a`` (H, W) started at ``2h``."""
    logits = pyro.param("logits", lambda: data_logits(observed, noise).detach().clone())
    return pyro.sample("z", Spin(logits).to_event(2))

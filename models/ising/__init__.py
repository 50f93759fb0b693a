"""Ising model for binary image denoising (Murphy 2012, §21.3.2).

- :mod:`models.ising.energy`: couplings, local evidence, log density, mean-field ELBO.
- :mod:`models.ising.noise`: Gaussian and flip noise, validation, pixel error.
- :mod:`models.ising.pyro_model` / :mod:`models.ising.numpyro_model`: ``model`` and
  ``guide`` with the same signature and sites (import them explicitly; they pull in
  torch / JAX).
"""

from models.ising.energy import (
    Couplings,
    LocalField,
    Posterior,
    elbo_from_logits,
    elbo_from_mean,
    log_joint,
    make_couplings,
    neighbor_sum,
    pair_sum,
)
from models.ising.noise import (
    Noise,
    corrupt,
    local_field,
    make_posterior,
    pixel_error,
    threshold,
)

__all__ = [
    "Couplings",
    "LocalField",
    "Noise",
    "Posterior",
    "corrupt",
    "elbo_from_logits",
    "elbo_from_mean",
    "local_field",
    "log_joint",
    "make_couplings",
    "make_posterior",
    "neighbor_sum",
    "pair_sum",
    "pixel_error",
    "threshold",
]

"""Ising model for binary image denoising (Murphy 2012, §21.3.2).

- :mod:`.energy`: couplings, local evidence, log density, mean-field ELBO.
- :mod:`.noise`: Gaussian and flip noise, validation, pixel error.
- :mod:`.pyro_model` / :mod:`.numpyro_model`: ``model`` and
  ``guide`` with the same signature and sites (import them explicitly; they pull in
  torch / JAX).
"""

from varbayes.models.ising.energy import (
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
from varbayes.models.ising.noise import (
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

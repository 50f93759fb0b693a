"""Fully Bayesian VAE (Kingma & Welling 2013, appendix F) as Pyro and NumPyro model+guide pairs.

The decoder weights θ get a prior N(0, s² I) and a mean-field Gaussian posterior q(θ);
the encoder q(z|x) is amortized as in :mod:`varbayes.models.vae`. Import the backend you need:
:mod:`.pyro_model` or :mod:`.numpyro_model` (same
names, signatures and sample sites); :mod:`.config` holds what they share.
"""

from varbayes.models.bayesian_vae.config import BayesConfig, kl_weights

__all__ = ["BayesConfig", "kl_weights"]

"""Fully Bayesian VAE (Kingma & Welling 2013, appendix F) as Pyro and NumPyro model+guide pairs.

The decoder weights θ get a prior N(0, s² I) and a mean-field Gaussian posterior q(θ);
the encoder q(z|x) is amortized as in :mod:`models.vae`. Import the backend you need:
:mod:`models.bayesian_vae.pyro_model` or :mod:`models.bayesian_vae.numpyro_model` (same
names, signatures and sample sites); :mod:`models.bayesian_vae.config` holds what they share.
"""

from models.bayesian_vae.config import BayesConfig, kl_weights

__all__ = ["BayesConfig", "kl_weights"]

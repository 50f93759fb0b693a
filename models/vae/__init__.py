"""Variational autoencoder (Kingma & Welling 2013) as Pyro and NumPyro model+guide pairs.

Import the backend you need: :mod:`.pyro_model` or :mod:`.numpyro_model`
(both expose ``VAE``, ``build``, ``model``, ``guide``, ``weights``, ``with_params``,
``encode``, ``decode``, ``log_likelihood``); :mod:`.config` holds what they share.
"""

from varbayes.models.vae.config import VAEConfig, check_data, init_weights, n_params

__all__ = ["VAEConfig", "check_data", "init_weights", "n_params"]

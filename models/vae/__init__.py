"""Variational autoencoder (Kingma & Welling 2013) as Pyro and NumPyro model+guide pairs.

Import the backend you need: :mod:`models.vae.pyro_model` or :mod:`models.vae.numpyro_model`
(both expose ``VAE``, ``build``, ``model``, ``guide``, ``weights``, ``with_params``,
``encode``, ``decode``, ``log_likelihood``); :mod:`models.vae.config` holds what they share.
"""

from models.vae.config import VAEConfig, check_data, init_weights, n_params

__all__ = ["VAEConfig", "check_data", "init_weights", "n_params"]

"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov 2016, section 5) as Pyro
and NumPyro model+guide pairs.

Import the backend you need: :mod:`.pyro_model` or :mod:`.numpyro_model` (both expose
``VAE2``, ``build``, ``model``, ``guide``, ``weights``, ``with_params``, ``encode``,
``top_down``, ``decode``);
:mod:`.config` holds what they share.
"""

from varbayes.models.vae2.config import VAE2Config, init_weights, n_params

__all__ = ["VAE2Config", "init_weights", "n_params"]

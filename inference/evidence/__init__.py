"""Marginal-likelihood estimators for models with per-datapoint continuous latents:
importance sampling (:mod:`importance`), quadrature (:mod:`quadrature`), AIS and BDMC
(:mod:`ais`, with its torch half :mod:`ais_pyro`) and the AEVB appendix-D estimator
(:mod:`hmc`), all on the per-datapoint log densities of :mod:`sites`; :mod:`parallel` splits
the datapoints of IS, the ELBO and AIS over JAX devices or torch ranks. Generic: never imports
a model family, the commands or the CLI."""

"""MCMC for any model: :func:`nuts.nuts` in NumPyro or Pyro, as arviz InferenceData.
Generic: never imports a model family, the commands or the CLI."""

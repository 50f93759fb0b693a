"""Stochastic variational inference: :func:`svi.fit` (the training loop for any model+guide
pair, both backends) and its checkpoint file format (:mod:`checkpoint`). Generic: never
imports a model family, the commands or the CLI."""

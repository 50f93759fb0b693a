"""Inference for the Ising denoising model: CAVI (:mod:`cavi`), SVI on the mean-field ELBO
(:mod:`svi`), Gibbs and ICM (:mod:`gibbs`), Gibbs as InferenceData (:mod:`mcmc`), the
mean-field gap study (:mod:`gap`), the coupling comparison (:mod:`compare`), and one entry
point for every method (:mod:`denoise`), all returning :class:`results.PosteriorResult`.
A model family: it may use the generic families and :mod:`varbayes.models.ising`; it never
imports ``inference.vae``, the commands or the CLI."""

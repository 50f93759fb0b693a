"""The VAE family's workflow: the run folder (:mod:`run`), training a run (:mod:`train`),
its figures (:mod:`figures`), the evidence of a run with θ averaged over q(θ)
(:mod:`bayes_evidence`), the latent posterior against the encoder (:mod:`latent_posterior`,
:mod:`amortization`) and NUTS over a Bayesian decoder's weights (:mod:`weights_posterior`).
A model family: it may use the generic families and :mod:`varbayes.models.vae` /
:mod:`varbayes.models.bayesian_vae`; it never imports ``inference.ising``, the commands or
the CLI."""

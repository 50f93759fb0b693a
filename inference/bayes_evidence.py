"""Test log-likelihood of a Bayesian-VAE run: importance sampling over z with θ ~ q(θ).

A Bayesian decoder has no single p(x|θ); two numbers are natural, and both are returned
(nats per datapoint, with S = ``n_theta`` draws θ_s ~ q(θ) shared by all datapoints and K
= ``k`` draws z ~ q(z|x) per datapoint and θ_s, weights w_sk = p(x|z_sk,θ_s) p(z_sk) /
q(z_sk|x)):

- ``predictive``: log (1/(SK)) Σ_s Σ_k w_sk, the joint IS estimate over (θ, z) of
  **log E_q(θ)[p(x|θ)]**, the log posterior-predictive density of a test point with q(θ)
  standing in for the posterior p(θ|D). It is a stochastic lower bound (by Jensen; the bias
  shrinks as S·K grows), with q(θ) as the proposal for θ and q(z|x) for z.
- ``average``: (1/S) Σ_s log (1/K) Σ_k w_sk, the mean over θ ~ q(θ) of the IWAE estimate of
  log p(x|θ_s): an estimate (lower-biased in K) of **E_q(θ)[log p(x|θ)]**, the score of an
  "average model" drawn from q(θ). It is ≤ ``predictive`` up to noise (Jensen over θ);
  it bounds nothing in particular.

For a MAP/ML VAE run (no q(θ)) both equal the usual IS estimate of log p(x) with the
point-estimate decoder, so the same function scores both kinds of run on equal terms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from inference.errors import check
from inference.evidence import importance_sampling, log_mean_exp
from models.bayesian_vae.predictive import decoder_draws


def theta_vaes(mod: Any, vae: Any, sigma: dict[str, np.ndarray] | None, n_theta: int,
               seed: int) -> list[Any]:
    """``[vae]`` for a point-estimate decoder (``sigma`` None); else ``n_theta`` copies of
    it whose decoders are draws θ_s ~ N(μ, σ²) = q(θ), μ being ``vae``'s decoder."""
    if sigma is None:
        return [vae]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 37]))
    return decoder_draws(mod, vae.config, mod.weights(vae), sigma, n_theta, rng)


def joint_ess(log_px: np.ndarray, ess: np.ndarray, k: int) -> np.ndarray:
    """ESS of the S·K pooled weights from per-θ IS results: ``log_px`` (S, N) = log of the
    mean of each θ's K weights and ``ess`` (S, N) = (Σw)²/Σw² of each; returns (N,)."""
    log_sum = np.log(k) + log_px  # log Σ_k w_sk
    log_sq = 2 * log_sum - np.log(ess)  # log Σ_k w_sk²
    return np.exp(2 * log_mean_exp(log_sum, axis=0) - log_mean_exp(log_sq, axis=0)
                  + np.log(len(log_px)))


class BayesEvidence(NamedTuple):
    """What :func:`bayesian_log_evidence` returns; arrays per datapoint, nats."""

    predictive: np.ndarray
    """(N,) estimate of log E_q(θ)[p(x|θ)] (joint IS over θ and z; lower-biased)."""
    average: np.ndarray
    """(N,) estimate of E_q(θ)[log p(x|θ)] (IWAE per θ draw, averaged; lower-biased)."""
    per_theta: np.ndarray
    """(S, N) IWAE estimate of log p(x|θ_s) for every θ draw."""
    ess: np.ndarray
    """(N,) effective sample size of the S·K joint weights."""
    k: int
    """z draws per datapoint and θ draw."""
    n_theta: int
    """θ draws (1 for a point-estimate run)."""
    bayesian: bool
    """Whether the run had a q(θ)."""


def bayesian_log_evidence(run_dir: str | Path, x: np.ndarray, k: int = 100,
                          n_theta: int = 10, seed: int = 0, c: np.ndarray | None = None,
                          batch_size: int = 500) -> BayesEvidence:
    """Score test points ``x`` (N, D) under the run in ``run_dir`` (see the module doc).

    Parameters
    ----------
    run_dir : the ``--out`` of ``varbayes vae train`` (``--bayesian`` or not).
    x : (N, D) float32 test points, binarized as the run's evaluation sets are.
    k : z draws per datapoint and θ draw (K ≥ 1).
    n_theta : θ draws S ≥ 1 from q(θ) (ignored for a point-estimate run).
    seed : seeds the θ and z draws.
    c : (N, C) conditioning vectors of a conditional run, else None.
    """
    from inference.commands.evidence import batches_for
    from inference.commands.vae import CHECKPOINT, backend_module, load_sigma
    from inference.svi import load_checkpoint
    from models.vae.config import VAEConfig

    check(k >= 1, f"--k must be >= 1, got {k}")
    check(n_theta >= 1, f"--n-theta must be >= 1, got {n_theta}")
    arrays, header = load_checkpoint(Path(run_dir) / CHECKPOINT)
    check("vae" in header.get("meta", {}),
          f"{run_dir} is not a VAE run: pass the --out of 'varbayes vae train'")
    config = VAEConfig.from_dict(header["meta"]["vae"])
    weights = {n[len("export/"):]: v for n, v in arrays.items()
               if n.startswith("export/") and not n.startswith("export/sigma/")}
    sigma = load_sigma(run_dir)
    backend = header["backend"]
    mod = backend_module(backend)
    vaes = theta_vaes(mod, mod.build(config, weights), sigma, n_theta, seed)
    results = [importance_sampling(mod.model, mod.guide,
                                   batches_for(v, backend, x, c, batch_size), k,
                                   backend=backend, seed=seed + s)
               for s, v in enumerate(vaes)]
    pt = np.stack([r.log_px for r in results])  # (S, N)
    ess = joint_ess(pt, np.stack([r.ess for r in results]), k)
    return BayesEvidence(log_mean_exp(pt, axis=0), pt.mean(0), pt, ess, k, len(vaes),
                         sigma is not None)

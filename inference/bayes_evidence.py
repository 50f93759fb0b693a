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
from typing import NamedTuple

import numpy as np

from inference.errors import check
from inference.evidence import effective_sample_size, log_mean_exp
from models.bayesian_vae.predictive import decoder_draws

LOG_2PI = float(np.log(2 * np.pi))


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


def _log_normal(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return np.sum(-0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * LOG_2PI, axis=-1)


def log_weights(vmod, vae, x: np.ndarray, k: int, rng: np.random.Generator,
                c: np.ndarray | None = None, chunk: int = 50) -> np.ndarray:
    """(K, N) log w = log p(x|z) + log p(z) − log q(z|x), z ~ q(z|x), for one VAE."""
    mu, sigma = vmod.encode(vae, x, c)
    out = []
    for start in range(0, k, chunk):
        m = min(chunk, k - start)
        z = (mu + sigma * rng.standard_normal((m, *mu.shape))).astype(np.float32)
        ll = vmod.log_likelihood(vae, x, z, c).sum(-1)  # (m, N)
        out.append(ll + _log_normal(z, 0.0, 1.0) - _log_normal(z, mu, sigma))
    return np.concatenate(out).astype(np.float64)


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
    vmod = backend_module(header["backend"])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31]))
    vaes = decoder_draws(vmod, config, weights, sigma, n_theta, rng)
    per_theta, joint_lmx, ess = [], [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        cb = None if c is None else c[i:i + batch_size]
        lw = np.stack([log_weights(vmod, v, xb, k, rng, cb) for v in vaes])  # (S, K, N)
        per_theta.append(log_mean_exp(lw, axis=1))
        flat = lw.reshape(-1, lw.shape[-1])
        joint_lmx.append(log_mean_exp(flat, axis=0))
        ess.append(effective_sample_size(flat))
    pt = np.concatenate(per_theta, axis=1)
    return BayesEvidence(np.concatenate(joint_lmx), pt.mean(0), pt, np.concatenate(ess), k,
                         len(vaes), sigma is not None)

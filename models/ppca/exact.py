"""PPCA parameters and its closed forms, in numpy float64 (the backends share these)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import multivariate_normal


class PPCA(NamedTuple):
    """Parameters of p(x, z) and of a Gaussian guide q(z|x) = N(A x + c, diag s²)."""

    W: np.ndarray
    """(D, K) loading matrix."""
    b: np.ndarray
    """(D,) mean of x."""
    sigma: float
    """Noise standard deviation."""
    A: np.ndarray
    """(K, D) guide: the posterior mean is A x + c."""
    c: np.ndarray
    """(K,) guide offset."""
    s: np.ndarray
    """(K,) guide standard deviations."""


def exact_posterior(W: np.ndarray, b: np.ndarray, sigma: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, c, cov) with p(z|x) = N(A x + c, cov): A = M⁻¹Wᵀ, c = -A b, cov = σ² M⁻¹."""
    K = W.shape[1]
    Minv = np.linalg.inv(W.T @ W + sigma**2 * np.eye(K))
    A = Minv @ W.T
    return A, -A @ b, sigma**2 * Minv


def exact_log_evidence(p: PPCA, x: np.ndarray) -> np.ndarray:
    """log p(x_i) = log N(x_i; b, W Wᵀ + σ² I) in nats, (N,), for x (N, D)."""
    cov = p.W @ p.W.T + p.sigma**2 * np.eye(p.W.shape[0])
    return multivariate_normal(p.b, cov).logpdf(x).reshape(len(x))


def random_ppca(D: int, K: int, sigma: float, seed: int = 0, guide_scale: float = 1.0,
                diagonal_guide: bool = True) -> PPCA:
    """A random PPCA with a guide at the exact posterior mean.

    The guide's standard deviations are the exact posterior marginal ones times
    ``guide_scale``; since the exact posterior is correlated, a diagonal guide is exact only
    when ``W`` has orthogonal columns, which we arrange so that ``guide_scale=1`` is exact.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, K)))
    W = q * rng.uniform(0.5, 2.0, size=K)  # orthogonal columns: WᵀW diagonal
    b = rng.normal(size=D)
    A, c, cov = exact_posterior(W, b, sigma)
    s = np.sqrt(np.diag(cov)) * guide_scale
    return PPCA(W, b, float(sigma), A, c, s)


def simulate(p: PPCA, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, D), z (n, K)) drawn from the model."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, p.W.shape[1]))
    x = z @ p.W.T + p.b + p.sigma * rng.normal(size=(n, p.W.shape[0]))
    return x, z

"""The one result type every Ising inference method returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class PosteriorResult(NamedTuple):
    """What a method says about ``p(z | x)`` on an H×W grid.

    Every method fills every field; a quantity it does not define is NaN (or None).
    """

    method: str
    """Name of the method, e.g. ``"cavi"`` or ``"gibbs"``."""
    mean: np.ndarray
    """(H, W) float64 in [−1, 1]: ``E[z_i]`` under the posterior or its approximation."""
    estimate: np.ndarray
    """(H, W) int8 ±1: the MPM image ``sign(mean)`` (ties to +1); the MAP guess for ICM."""
    elbo: float
    """Mean-field ELBO in nats (a bound on ``log Σ_z p̃(z, x)``), or NaN."""
    log_evidence: float
    """``log Σ_z p̃(z, x)`` in nats for the exact method (see
    :mod:`varbayes.models.ising.exact`), or NaN."""
    history: np.ndarray
    """(iterations + 1,) float64: the objective at the start and after each iteration
    (one value, ``log_evidence``, for the exact method)."""
    history_label: str
    """What ``history`` holds, e.g. ``"ELBO (nats)"``."""
    iterations: int
    """Iterations (sweeps, optimizer steps) actually run."""
    seconds: float
    """Wall-clock time of the fit, in seconds."""
    mean_stderr: np.ndarray | None = None
    """(H, W) Monte-Carlo standard error of ``mean`` for sampling methods, else None."""


def mpm(mean: np.ndarray) -> np.ndarray:
    """Maximum-posterior-marginal image ``sign(mean)`` as int8 ±1 (ties to +1)."""
    return np.where(np.asarray(mean) >= 0, 1, -1).astype(np.int8)

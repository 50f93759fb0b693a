"""What both AIS implementations share: the options, the β schedule, the result and the
estimate on log weights (pure numpy).

AIS (Neal 2001) moves C chains per datapoint along the geometric path
log f_β(z) = log p₀(z) + β ℓ(z), 0 = β_0 < … < β_T = 1, from a start density p₀ (the prior
or the guide) to the posterior, accumulating log w += (β_t − β_{t−1}) ℓ(z). The JAX core is
:mod:`.ais_jax`, the torch one
:mod:`.ais_pyro`; :func:`.ais.ais`
picks one by ``backend``. All log densities are in nats.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import numpy as np

from varbayes.models.errors import check

SCHEDULES = ("linear", "sigmoid")
INITS = ("prior", "guide")
JITTER = 0.5
"""relative jitter of the HMC step size per transition."""
PILOT_CHAINS = 4
"""chains per datapoint that adapt the step sizes before the estimating chains run."""


class AISOptions(NamedTuple):
    """Settings of AIS (both backends)."""

    n_steps: int = 200
    """T, the number of intermediate distributions (transitions); T = 1 is plain IS from p₀."""
    chains: int = 16
    """C, independent chains per datapoint."""
    schedule: str = "sigmoid"
    """``linear`` or ``sigmoid`` spacing of β (sigmoid: denser near 0 and 1)."""
    init: str = "prior"
    """start density p₀: ``prior`` p(z) or ``guide`` q(z|x)."""
    n_leapfrog: int = 10
    """leapfrog steps per HMC transition."""
    step_size: float = 0.05
    """initial HMC step size."""
    target_accept: float = 0.65
    """the acceptance probability the step size is adapted toward."""
    adapt_rate: float = 0.5
    """ε ← ε·exp(rate·(a − target)) after each transition."""


DEFAULTS = AISOptions()


class Point(NamedTuple):
    """Where the chains are: z with both densities and their gradients there, arrays of
    either backend. AIS carries it from one transition to the next, so a transition costs
    its leapfrog gradients only."""

    z: Any
    """(C, M, d) the latents."""
    log_p0: Any
    """(C, M) log p₀(z), nats."""
    log_joint: Any
    """(C, M) log p(x, z), nats."""
    grad_p0: Any
    """(C, M, d) ∇_z log p₀(z)."""
    grad_joint: Any
    """(C, M, d) ∇_z log p(x, z)."""


def tempered(point: Point, beta: Any) -> tuple[Any, Any]:
    """(log f_β (C, M), ∇ log f_β (C, M, d)) at ``point``, with log f_β = log p₀ +
    β (log p(x, z) − log p₀): no new passes."""
    return (point.log_p0 + beta * (point.log_joint - point.log_p0),
            point.grad_p0 + beta * (point.grad_joint - point.grad_p0))


def check_options(o: AISOptions) -> None:
    """Raise a one-line :class:`VarbayesError` on a bad setting."""
    check(int(o.n_steps) >= 1, f"AIS needs n_steps >= 1 intermediate distributions, got "
                               f"{o.n_steps}")
    check(int(o.chains) >= 1, f"AIS needs chains >= 1, got {o.chains}")
    check(o.schedule in SCHEDULES, f"AIS schedule must be one of {', '.join(SCHEDULES)}, got "
                                   f"{o.schedule!r}")
    check(o.init in INITS, f"AIS init must be one of {', '.join(INITS)}, got {o.init!r}")
    check(int(o.n_leapfrog) >= 1, f"AIS needs n_leapfrog >= 1, got {o.n_leapfrog}")
    check(o.step_size > 0, f"AIS step_size must be > 0, got {o.step_size}")
    check(0 < o.target_accept < 1, f"AIS target_accept must be in (0, 1), got "
                                   f"{o.target_accept}")
    check(o.adapt_rate >= 0, f"AIS adapt_rate must be >= 0, got {o.adapt_rate}")


def schedule(n_steps: int, kind: str = "sigmoid", delta: float = 4.0) -> np.ndarray:
    """(T+1,) increasing β from 0 to 1 (float64).

    ``linear``: β_t = t/T. ``sigmoid``: β_t ∝ σ(δ(2t/T − 1)) rescaled to [0, 1] (Grosse
    et al. 2015), which spends more steps where the path changes fastest, near the ends.
    """
    check(int(n_steps) >= 1, f"AIS needs n_steps >= 1, got {n_steps}")
    check(kind in SCHEDULES, f"AIS schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    t = np.linspace(0.0, 1.0, int(n_steps) + 1)
    if kind == "linear" or n_steps == 1:
        return t
    s = 1.0 / (1.0 + np.exp(-delta * (2.0 * t - 1.0)))
    return (s - s[0]) / (s[-1] - s[0])


def path_betas(options: AISOptions, reverse: bool = False) -> np.ndarray:
    """The checked ``options``' β schedule, (T+1,): 0 → 1, or 1 → 0 for the reverse (BDMC)
    chain."""
    check_options(options)
    betas = schedule(options.n_steps, options.schedule)
    return betas[::-1].copy() if reverse else betas


def log_mean_exp_stderr(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log (1/C) Σ_c w_c over axis 0 of (C, N) and its delta-method standard error
    sd(w)/(√C · mean(w)); 0 when C = 1."""
    log_w = np.asarray(log_w, dtype=np.float64)
    m = log_w.max(0)
    w = np.exp(log_w - m)
    est = np.log(w.mean(0)) + m
    C = log_w.shape[0]
    se = w.std(0, ddof=1) / (math.sqrt(C) * w.mean(0)) if C > 1 else np.zeros(log_w.shape[1])
    return est, se


class AISResult(NamedTuple):
    """AIS estimates per datapoint, in nats."""

    log_px: np.ndarray
    """(N,) log-mean-exp over chains of the log weights: a stochastic lower bound on log
    p(x_i) (forward) or, for the reverse chain, an upper bound."""
    stderr: np.ndarray
    """(N,) delta-method standard error of ``log_px`` over chains."""
    log_w: np.ndarray
    """(C, N) per-chain log weights (forward) or per-chain upper-bound terms (reverse)."""
    accept: np.ndarray
    """(T−1,) mean HMC acceptance probability per transition."""
    seconds: float


def finish(parts: list[tuple[np.ndarray, np.ndarray]], reverse: bool, t0: float
            ) -> AISResult:
    log_w = np.concatenate([p[0] for p in parts], axis=1).astype(np.float64)  # (C, N)
    accept = np.mean([p[1] for p in parts], axis=0) if parts[0][1].size else np.zeros(0)
    if reverse:  # log_w holds log(1/p̂) per chain: estimate log p = −log-mean-exp(−…)
        est, se = log_mean_exp_stderr(log_w)
        return AISResult(-est, se, -log_w, accept, time.perf_counter() - t0)
    est, se = log_mean_exp_stderr(log_w)
    return AISResult(est, se, log_w, accept, time.perf_counter() - t0)



"""Closed-form coordinate ascent (CAVI) for the mean-field Ising posterior.

Setting the derivative of the ELBO (see :mod:`varbayes.models.ising.energy`) with respect to one
``μ_i`` to zero, with every other mean fixed, gives

    μ_i ← tanh(Σ_j W_ij μ_j + h_i),          h_i = ½(ℓ_i⁺ − ℓ_i⁻),

and damping mixes it with the old value: ``μ_i ← (1 − λ) μ_i + λ · tanh(...)``. Two schedules:

- ``parallel``: every site at once from the old means (Jacobi). Cheap and vectorized, but
  not a coordinate ascent, so it can oscillate between the two chessboard colourings unless
  damped (λ < 1).
- ``checkerboard``: the two colours of the chessboard in turn. Sites of one colour are not
  neighbours, so each half-sweep maximizes the ELBO exactly over that colour (with λ < 1 it
  moves part of the way up a concave function); the ELBO never decreases.

With no neighbours the optimum is ``q_i ∝ exp(ℓ_i)``, i.e. ``μ_i = tanh(h_i)``: that is the
data-driven start. BlackJAX-style: :func:`init` and a pure :func:`step` returning
``(state, info)``; :func:`run` loops until the largest change is below ``tol``.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from varbayes.inference.ising.results import PosteriorResult, mpm
from varbayes.models.errors import check
from varbayes.models.ising._array import Array, tanh
from varbayes.models.ising.energy import Couplings, Posterior, elbo_from_mean, neighbor_sum

SCHEDULES = ("parallel", "checkerboard")


class MeanFieldState(NamedTuple):
    """What the next CAVI step needs."""

    mu: np.ndarray
    """(H, W): current means ``E_q[z_i]`` in (−1, 1)."""
    iteration: int
    """Full sweeps done so far."""


class MeanFieldInfo(NamedTuple):
    """Diagnostics of one CAVI step."""

    elbo: float
    """Exact mean-field ELBO (nats) after the step."""
    max_change: float
    """Largest ``|Δμ_i|`` in the step."""


def validate_schedule(schedule: str, damping: float) -> None:
    """Raise :class:`VarbayesError` for an unknown schedule or a damping outside (0, 1]."""
    check(schedule in SCHEDULES,
          f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    check(bool(np.isfinite(damping)) and 0 < damping <= 1,
          f"--damping must be in (0, 1], got {damping}: 1 is the plain update, "
          "0.5 the damped one")


def chessboard(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float mask, 1 where ``row + col`` is even."""
    H, W = shape
    return ((np.arange(H)[:, None] + np.arange(W)[None, :]) % 2 == 0).astype(np.float64)


def parallel_sweep(mu: Array, h: Array, couplings: Couplings, damping: float) -> Array:
    """One damped Jacobi sweep ``μ ← (1 − λ)μ + λ tanh(Σ_j W_ij μ_j + h)``, any array library.

    Shapes: ``mu``, ``h`` (..., H, W); returns the same.
    """
    target = tanh(neighbor_sum(mu, couplings) + h)
    return target if damping == 1 else mu + damping * (target - mu)


def checkerboard_sweep(
    mu: Array, h: Array, couplings: Couplings, damping: float, black: Array
) -> Array:
    """Two half-sweeps, black sites (``black == 1``) then white, any array library."""
    for mask in (black, 1 - black):
        target = tanh(neighbor_sum(mu, couplings) + h)
        mu = mu + (damping * mask) * (target - mu)
    return mu


def init(post: Posterior, mu0: np.ndarray | None = None) -> MeanFieldState:
    """Start from ``mu0`` if given, else from the data: ``μ_i = tanh(h_i)``."""
    h = np.asarray(post.field.h, dtype=np.float64)
    if mu0 is None:
        mu = np.tanh(h)
    else:
        mu = np.asarray(mu0, dtype=np.float64)
        check(mu.shape == h.shape,
              f"initial means have shape {mu.shape}, but the grid is {h.shape}")
        check(bool(np.all(np.abs(mu) <= 1)), "initial means must lie in [-1, 1]")
    return MeanFieldState(mu, 0)


def step(
    state: MeanFieldState, post: Posterior, schedule: str = "checkerboard",
    damping: float = 1.0,
) -> tuple[MeanFieldState, MeanFieldInfo]:
    """One full CAVI sweep (pure): returns the new state and its diagnostics."""
    h = post.field.h
    if schedule == "parallel":
        mu = parallel_sweep(state.mu, h, post.couplings, damping)
    else:
        mu = checkerboard_sweep(state.mu, h, post.couplings, damping, chessboard(h.shape))
    info = MeanFieldInfo(float(elbo_from_mean(mu, post)),
                         float(np.max(np.abs(mu - state.mu), initial=0.0)))
    return MeanFieldState(mu, state.iteration + 1), info


def run(
    post: Posterior, *, schedule: str = "checkerboard", damping: float = 1.0,
    max_iters: int = 100, tol: float = 1e-6, mu0: np.ndarray | None = None,
) -> PosteriorResult:
    """CAVI until the largest change ``max|Δμ| < tol`` or ``max_iters`` sweeps.

    Returns a :class:`PosteriorResult` whose ``history`` is the ELBO (nats) at the start and
    after every sweep.
    """
    validate_schedule(schedule, damping)
    check(max_iters >= 1, f"--iters must be >= 1, got {max_iters}")
    t0 = time.perf_counter()
    state = init(post, mu0)
    history = [float(elbo_from_mean(state.mu, post))]
    while state.iteration < max_iters:
        state, info = step(state, post, schedule, damping)
        history.append(info.elbo)
        if info.max_change < tol:
            break
    seconds = time.perf_counter() - t0
    return PosteriorResult(
        method="cavi", mean=state.mu, estimate=mpm(state.mu), elbo=history[-1],
        log_evidence=float("nan"), history=np.asarray(history), history_label="ELBO (nats)",
        iterations=state.iteration, seconds=seconds)


def torch_parallel_sweeps(mu, h, J: float, damping: float, sweeps: int):
    """``sweeps`` damped parallel sweeps with one scalar ``J``, in place on a torch ``mu``.

    The torch fast path: shift-and-add into one preallocated buffer, then
    ``tanh(f) = 2·sigmoid(2f) − 1`` (torch's CPU ``sigmoid`` is vectorized and ~15× faster
    than its ``tanh``), all in place: no allocation inside the loop.
    ``mu``, ``h``: (H, W) float tensors. Returns ``mu``.
    """
    import torch

    two_h = 2 * h
    field = torch.empty_like(mu)
    for _ in range(sweeps):
        field.copy_(two_h)  # 2 (h + J Σ_j μ_j), the sigmoid's argument
        field[1:].add_(mu[:-1], alpha=2 * J)
        field[:-1].add_(mu[1:], alpha=2 * J)
        field[:, 1:].add_(mu[:, :-1], alpha=2 * J)
        field[:, :-1].add_(mu[:, 1:], alpha=2 * J)
        field.sigmoid_()
        # μ ← (1 − λ) μ + λ (2 s − 1)
        mu.mul_(1 - damping).add_(field, alpha=2 * damping).sub_(damping)
    return mu

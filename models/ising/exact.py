"""Exact inference for the Ising posterior: column transfer matrix and brute-force enumeration.

Both compute, in numpy float64,

- ``log_partition`` = ``log Σ_z p̃(z, x)`` = ``log Σ_z exp(Σ_{i~j} W_ij z_i z_j + Σ_i ℓ_i(z_i))``:
  the evidence under the *unnormalized* Ising prior. It includes every constant of the
  likelihood (``Σ ℓ`` is a normalized ``log p(x | z)``) and excludes the prior's partition
  function ``Z_W``. This is the quantity every mean-field ELBO in this package bounds.
- the marginals ``p(z_i = +1 | x)``.

The properly normalized ``log p(x) = log_partition − log Z_W`` comes from
:func:`log_evidence`, which runs the transfer matrix a second time with zero field.

The transfer matrix sweeps the grid column by column, carrying a log-weight vector over the
``2^H`` configurations of one column and replacing one site at a time (``O(W·H·2^H)`` time,
``O(W·2^H)`` memory for the marginals). The grid is transposed when that makes the columns
shorter, so any grid with ``min(H, W) ≤ MAX_ROWS`` is exact.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import logsumexp

from varbayes.models.errors import check
from varbayes.models.ising.energy import Couplings, LocalField, Posterior, log_joint

#: Longest column the transfer matrix accepts (2^14 states per column).
MAX_ROWS = 14
#: Most sites brute-force enumeration accepts (2^20 configurations).
MAX_BRUTE_SITES = 20


class ExactResult(NamedTuple):
    """Exact answers for one posterior."""

    log_partition: float
    """``log Σ_z p̃(z, x)`` in nats (likelihood constants in, prior ``Z_W`` out)."""
    marginals: np.ndarray
    """(H, W): ``p(z_i = +1 | x)``."""


def _as_float(post: Posterior) -> Posterior:
    cp, f = post
    f64 = np.asarray
    return Posterior(
        Couplings(f64(cp.horizontal, dtype=np.float64), f64(cp.vertical, dtype=np.float64)),
        LocalField(f64(f.minus, dtype=np.float64), f64(f.plus, dtype=np.float64)))


def transpose(post: Posterior) -> Posterior:
    """The same posterior on the transposed grid (rows become columns)."""
    cp, f = post
    return Posterior(Couplings(cp.vertical.T, cp.horizontal.T), LocalField(f.minus.T, f.plus.T))


def _flip_columns(post: Posterior) -> Posterior:
    cp, f = post
    return Posterior(Couplings(cp.horizontal[:, ::-1], cp.vertical[:, ::-1]),
                     LocalField(f.minus[:, ::-1], f.plus[:, ::-1]))


def _column_terms(post: Posterior, c: int) -> np.ndarray:
    """log φ_c(s): fields and vertical couplings inside column ``c``, shape (2,)*H."""
    H = post.shape[0]
    v = np.zeros((1,) * 0)
    for r in range(H):
        ell = np.array([post.field.minus[r, c], post.field.plus[r, c]])
        v = v[..., None] + ell  # new last axis: site r
        if r > 0:
            w = post.couplings.vertical[r - 1, c]
            v = v + np.array([[w, -w], [-w, w]])
    return v


def _forward(post: Posterior) -> tuple[np.ndarray, np.ndarray]:
    """Normalized log-weight vectors per column and their log normalizers.

    Returns ``alpha`` (W, 2^H) with ``logsumexp(alpha[c]) == 0`` and ``log_norms`` (W,) such
    that the total log weight of columns ``0..c`` is ``alpha[c] + log_norms[:c+1].sum()``.
    """
    H, W = post.shape
    alpha = np.empty((W, 2**H))
    log_norms = np.empty(W)
    v = _column_terms(post, 0)
    for c in range(W):
        if c > 0:
            for r in range(H):
                wh = post.couplings.horizontal[r, c - 1]
                v = v.reshape(2**r, 2, -1)
                old_minus, old_plus = v[:, 0], v[:, 1]
                new = np.stack([np.logaddexp(old_minus + wh, old_plus - wh),
                                np.logaddexp(old_minus - wh, old_plus + wh)], axis=1)
                new[:, 0] += post.field.minus[r, c]
                new[:, 1] += post.field.plus[r, c]
                if r > 0:
                    wv = post.couplings.vertical[r - 1, c]
                    new = new.reshape(2 ** (r - 1), 2, 2, -1)
                    new = new + np.array([[wv, -wv], [-wv, wv]])[None, :, :, None]
                v = new
        flat = v.reshape(-1)
        log_norms[c] = logsumexp(flat)
        alpha[c] = flat - log_norms[c]
        v = alpha[c].reshape((2,) * H)
    return alpha, log_norms


def _oriented(post: Posterior) -> tuple[Posterior, bool]:
    post = _as_float(post)
    H, W = post.shape
    check(min(H, W) <= MAX_ROWS,
          f"a {H}x{W} grid is too large for exact inference: the transfer matrix needs "
          f"min(height, width) <= {MAX_ROWS}; crop the image or pick another --method")
    return (transpose(post), True) if H > W else (post, False)


def transfer_matrix(post: Posterior, *, marginals: bool = True) -> ExactResult:
    """Exact ``log_partition`` and marginals by the column transfer matrix.

    Parameters
    ----------
    post : posterior on an H×W grid with ``min(H, W) ≤ MAX_ROWS``.
    marginals : compute ``p(z_i = +1 | x)`` too (a second, backward sweep); if False the
        ``marginals`` field is NaN.
    """
    oriented, transposed = _oriented(post)
    H, W = oriented.shape
    alpha, log_norms = _forward(oriented)
    log_z = float(log_norms.sum())
    if not marginals:
        return ExactResult(log_z, np.full(post.shape, np.nan))
    beta, _ = _forward(_flip_columns(oriented))
    beta = beta[::-1]
    p_plus = np.empty((H, W))
    for c in range(W):
        joint = alpha[c] + beta[c] - _column_terms(oriented, c).reshape(-1)
        prob = np.exp(joint - logsumexp(joint)).reshape((2,) * H)
        for r in range(H):
            p_plus[r, c] = np.moveaxis(prob, r, 0)[1].sum()
    return ExactResult(log_z, p_plus.T if transposed else p_plus)


def brute_force(post: Posterior, *, chunk: int = 1 << 15) -> ExactResult:
    """Exact ``log_partition`` and marginals by enumerating all ``2^(H·W)`` configurations.

    Only for ``H·W ≤ MAX_BRUTE_SITES``; the cross-check for :func:`transfer_matrix`.
    """
    post = _as_float(post)
    H, W = post.shape
    n = H * W
    check(n <= MAX_BRUTE_SITES,
          f"a {H}x{W} grid has {n} sites, too many to enumerate: the limit is "
          f"{MAX_BRUTE_SITES}; use the transfer matrix (--method exact) instead")
    bits = np.arange(n)[::-1]
    log_w, plus = [], np.zeros(n)
    for start in range(0, 2**n, chunk):
        idx = np.arange(start, min(start + chunk, 2**n))
        z = np.where((idx[:, None] >> bits) & 1, 1.0, -1.0).reshape(-1, H, W)
        log_w.append(log_joint(z, post))
    log_w = np.concatenate(log_w)
    log_z = float(logsumexp(log_w))
    weights = np.exp(log_w - log_z)
    for start in range(0, 2**n, chunk):
        idx = np.arange(start, min(start + chunk, 2**n))
        plus += weights[idx] @ ((idx[:, None] >> bits) & 1)
    return ExactResult(log_z, plus.reshape(H, W))


def log_prior_partition(couplings: Couplings) -> float:
    """``log Z_W = log Σ_z exp(Σ_{i~j} W_ij z_i z_j)`` by the transfer matrix (nats)."""
    hor = np.asarray(couplings.horizontal, dtype=np.float64)
    shape = (hor.shape[0], hor.shape[1] + 1)
    zero = LocalField(np.zeros(shape), np.zeros(shape))
    return transfer_matrix(Posterior(couplings, zero), marginals=False).log_partition


def log_evidence(post: Posterior) -> float:
    """The normalized ``log p(x) = log Σ_z p̃(z, x) − log Z_W`` in nats."""
    return (transfer_matrix(post, marginals=False).log_partition
            - log_prior_partition(post.couplings))


def exact(post: Posterior) -> ExactResult:
    """Transfer matrix when it applies; brute force is only a cross-check."""
    return transfer_matrix(post)

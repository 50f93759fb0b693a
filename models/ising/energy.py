"""The Ising posterior in one place: couplings, local evidence, log density and mean-field ELBO.

The clean image is ``z ∈ {−1, +1}^(H×W)``. The model's log density (in nats) is

    log p̃(z, x) = Σ_{i~j} W_ij z_i z_j + Σ_i ℓ_i(z_i),        ℓ_i(z) = log p(x_i | z_i = z),

where ``i~j`` runs over the unordered 4-neighbour pairs of the grid, each counted once
(Murphy 2012, §21.3.2). The prior is left unnormalized: its partition function
``Z_W = Σ_z exp(Σ W_ij z_i z_j)`` is *not* included, so ``log Σ_z p̃(z, x) = log p(x) + log Z_W``.
The likelihood ``ℓ`` keeps all its constants (e.g. ``−½ log 2πσ²`` per pixel).

Writing ``ℓ_i(z) = c_i + h_i z`` with ``h_i = ½(ℓ_i⁺ − ℓ_i⁻)`` and ``c_i = ½(ℓ_i⁺ + ℓ_i⁻)``,
the fully factorized ``q(z) = Π q_i(z_i)`` with means ``μ_i = E_q[z_i]`` has the closed-form ELBO

    L(μ) = Σ_{i~j} W_ij μ_i μ_j + Σ_i (c_i + h_i μ_i) + Σ_i H_b((1 + μ_i)/2).

Every function here accepts numpy, JAX or torch arrays, with optional leading batch axes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from varbayes.models.errors import check
from varbayes.models.ising._array import Array, pad2, softplus, sum2, tanh


class Couplings(NamedTuple):
    """Per-edge couplings ``W_ij`` of the 4-neighbour grid (nats per unit of ``z_i z_j``)."""

    horizontal: Array
    """(H, W−1): coupling between pixel (r, c) and (r, c+1)."""
    vertical: Array
    """(H−1, W): coupling between pixel (r, c) and (r+1, c)."""


class LocalField(NamedTuple):
    """The local evidence ``ℓ_i(z) = log p(x_i | z_i = z)``, in nats, for both spin values."""

    minus: Array
    """(H, W): ``ℓ_i(−1)``."""
    plus: Array
    """(H, W): ``ℓ_i(+1)``."""

    @property
    def h(self) -> Array:
        """(H, W): external field ``½(ℓ⁺ − ℓ⁻)``; the spin-dependent part of ``ℓ`` is ``h z``."""
        return 0.5 * (self.plus - self.minus)

    @property
    def c(self) -> Array:
        """(H, W): spin-independent part ``½(ℓ⁺ + ℓ⁻)``."""
        return 0.5 * (self.plus + self.minus)


class Posterior(NamedTuple):
    """The unnormalized posterior ``p̃(z | x) ∝ exp(Σ W z z + Σ ℓ(z))`` on an H×W grid."""

    couplings: Couplings
    field: LocalField

    @property
    def shape(self) -> tuple[int, int]:
        """Grid shape ``(H, W)``."""
        return tuple(int(n) for n in self.field.plus.shape[-2:])  # type: ignore[return-value]


def make_couplings(
    J: float | tuple[np.ndarray, np.ndarray], shape: tuple[int, int]
) -> Couplings:
    """Build :class:`Couplings` from one scalar ``J`` or a ``(horizontal, vertical)`` pair.

    Parameters
    ----------
    J : a finite float (the same coupling on every edge) or arrays of shapes
        ``(H, W−1)`` and ``(H−1, W)``.
    shape : ``(H, W)`` of the grid.
    """
    H, W = shape
    if isinstance(J, tuple | list):
        hor, ver = (np.asarray(a, dtype=np.float64) for a in J)
        check(hor.shape == (H, W - 1) and ver.shape == (H - 1, W),
              f"coupling arrays have shapes {hor.shape} and {ver.shape}, but a {H}x{W} grid "
              f"needs horizontal {(H, W - 1)} and vertical {(H - 1, W)}")
    else:
        check(np.isscalar(J) and np.isfinite(J),
              f"--coupling must be a finite number, got {J!r}")
        hor = np.full((H, W - 1), float(J))
        ver = np.full((H - 1, W), float(J))
    check(bool(np.all(np.isfinite(hor)) and np.all(np.isfinite(ver))),
          "couplings contain NaN or infinite values: pass finite couplings")
    return Couplings(hor, ver)


def neighbor_sum(mu: Array, couplings: Couplings) -> Array:
    """``Σ_j W_ij μ_j`` over the 4 neighbours of every site.

    Parameters
    ----------
    mu : (..., H, W) spins or spin means.
    couplings : per-edge couplings of the same grid.

    Returns
    -------
    (..., H, W) array in the library of ``mu``.
    """
    hor, ver = couplings
    from_right = hor * mu[..., :, 1:]  # (..., H, W−1): reaches columns 0..W−2
    from_left = hor * mu[..., :, :-1]  # reaches columns 1..W−1
    from_below = ver * mu[..., 1:, :]  # (..., H−1, W): reaches rows 0..H−2
    from_above = ver * mu[..., :-1, :]  # reaches rows 1..H−1
    return (pad2(from_right, 0, 0, 0, 1) + pad2(from_left, 0, 0, 1, 0)
            + pad2(from_below, 0, 1, 0, 0) + pad2(from_above, 1, 0, 0, 0))


def pair_sum(z: Array, couplings: Couplings) -> Array:
    """``Σ_{i~j} W_ij z_i z_j`` (each unordered pair once): ``(..., H, W) -> (...)``."""
    hor, ver = couplings
    return (sum2(hor * z[..., :, 1:] * z[..., :, :-1])
            + sum2(ver * z[..., 1:, :] * z[..., :-1, :]))


def log_joint(z: Array, post: Posterior) -> Array:
    """``log p̃(z, x)`` in nats for spins ``z`` of shape ``(..., H, W)``; returns ``(...)``."""
    f = post.field
    return pair_sum(z, post.couplings) + sum2(f.c + f.h * z)


def expected_log_joint(mu: Array, post: Posterior) -> Array:
    """``E_q[log p̃(z, x)]`` for a factorized ``q`` with means ``mu`` (..., H, W) -> (...)."""
    return log_joint(mu, post)  # linear in each z_i, and q makes neighbours independent


def entropy_from_logits(a: Array) -> Array:
    """Entropy (nats) of ``q(z=+1) = sigmoid(a)`` per site: ``softplus(a) − a·sigmoid(a)``."""
    return softplus(a) - a * 0.5 * (1.0 + tanh(0.5 * a))


def entropy_from_mean(mu: np.ndarray) -> np.ndarray:
    """Entropy (nats) per site of a ±1 variable with mean ``mu`` in [−1, 1] (numpy)."""
    p = np.clip(0.5 * (1.0 + np.asarray(mu, dtype=np.float64)), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(np.where(p > 0, p * np.log(p), 0.0)
                 + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))


def elbo_from_logits(a: Array, post: Posterior) -> Array:
    """Closed-form mean-field ELBO (nats) from guide logits ``a = log q(+1)/q(−1)``.

    Shapes: ``a`` (..., H, W) -> (...). Differentiable in torch and JAX.
    """
    return expected_log_joint(tanh(0.5 * a), post) + sum2(entropy_from_logits(a))


def elbo_from_mean(mu: np.ndarray, post: Posterior) -> np.ndarray:
    """Closed-form mean-field ELBO (nats) from means ``mu`` (..., H, W) -> (...), numpy."""
    return expected_log_joint(mu, post) + entropy_from_mean(mu).sum(axis=(-2, -1))


def to_backend(post: Posterior, convert) -> Posterior:
    """Apply ``convert`` (e.g. ``torch.as_tensor``) to every array of ``post``."""
    cp, f = post
    return Posterior(Couplings(convert(cp.horizontal), convert(cp.vertical)),
                     LocalField(convert(f.minus), convert(f.plus)))

"""How loose is the mean-field bound? ``log Z − max ELBO`` against the coupling, exactly.

On grids small enough for the transfer matrix, the gap ``log Σ_z p̃ − ELBO = KL(q ‖ p) ≥ 0``
is computed exactly. Naive mean field puts the ferromagnetic transition at ``J = 1/4``
(four neighbours) instead of Onsager's ``β_c = ½ ln(1 + √2) ≈ 0.4407``, so the gap peaks in
between, where correlations are strongest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

from varbayes.inference.ising import cavi
from varbayes.models.ising import exact
from varbayes.models.ising.energy import LocalField, Posterior, make_couplings
from varbayes.models.ising.noise import Noise, corrupt, make_posterior

#: Onsager's critical coupling of the square-lattice Ising model.
ONSAGER_JC = 0.5 * float(np.log1p(np.sqrt(2.0)))
#: Where naive mean field puts the transition on the square lattice (1 / number of neighbours).
MEAN_FIELD_JC = 0.25


class Gap(NamedTuple):
    """Exact and mean-field values for one posterior (nats)."""

    log_partition: float
    """``log Σ_z exp(Σ W z z + Σ h z)`` (spin-independent likelihood constants dropped)."""
    elbo: float
    """Best mean-field ELBO over several starts, on the same scale."""

    @property
    def gap(self) -> float:
        """``log Z − ELBO ≥ 0`` in nats."""
        return self.log_partition - self.elbo

    @property
    def relative(self) -> float:
        """``gap / |log Z|``."""
        return self.gap / abs(self.log_partition)


def gap(post: Posterior, *, max_iters: int = 5000, tol: float = 1e-10) -> Gap:
    """Exact ``log Z`` and the best checkerboard-CAVI ELBO from the data, +½ and −½ starts.

    The field's spin-independent part ``c`` is dropped (it shifts both sides equally), so
    with zero field ``log Z`` is the Ising prior's ``log Z_W``.
    """
    h = np.asarray(post.field.h, dtype=np.float64)
    centred = Posterior(post.couplings, LocalField(-h, h))
    starts = [None, np.full(h.shape, 0.5), np.full(h.shape, -0.5)]
    best = max(cavi.run(centred, schedule="checkerboard", max_iters=max_iters, tol=tol,
                        mu0=m).elbo for m in starts)
    return Gap(exact.transfer_matrix(centred, marginals=False).log_partition, best)


def gap_vs_coupling(couplings: np.ndarray, h: np.ndarray) -> list[Gap]:
    """:func:`gap` for each scalar coupling ``J`` on the grid of the field ``h`` (H, W)."""
    field = LocalField(-h, h)
    return [gap(Posterior(make_couplings(float(J), h.shape), field)) for J in couplings]


class GapCurves(NamedTuple):
    """:func:`gap_curves`: the gap per coupling (nats) and relative to |log Z|, (J,) each."""

    zero_gap: np.ndarray
    zero_relative: np.ndarray
    data_gap: np.ndarray
    """Averaged over the noisy images."""
    data_relative: np.ndarray


def gap_curves(couplings: np.ndarray, size: int, noise: Noise, repeats: int,
               rng: np.random.Generator,
               progress: Callable[[Iterable], Iterable] = iter) -> GapCurves:
    """The gap against J on a ``size``×``size`` grid with zero field, and averaged over
    ``repeats`` noisy observations of an image whose left half is −1 and right half +1."""
    zero = gap_vs_coupling(couplings, np.zeros((size, size)))
    data_gaps, data_rel = np.zeros(len(couplings)), np.zeros(len(couplings))
    for _ in progress(range(repeats)):
        clean = np.where(np.arange(size)[None, :] < size // 2, -1, 1) * np.ones(
            (size, 1), dtype=np.int8)
        h = make_posterior(corrupt(clean, noise, rng), noise, 0.0).field.h
        gaps = gap_vs_coupling(couplings, h)
        data_gaps += np.array([g.gap for g in gaps]) / repeats
        data_rel += np.array([g.relative for g in gaps]) / repeats
    return GapCurves(np.array([g.gap for g in zero]), np.array([g.relative for g in zero]),
                     data_gaps, data_rel)

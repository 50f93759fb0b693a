"""The mean-field gap: >= 0, and it peaks between J = 1/4 and Onsager's J_c."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.ising.gap import MEAN_FIELD_JC, ONSAGER_JC, gap_vs_coupling


def test_gap_is_positive_and_peaks_near_the_critical_coupling():
    Js = np.linspace(0.05, 1.0, 20)
    gaps = gap_vs_coupling(Js, np.zeros((6, 6)))
    values = np.array([g.gap for g in gaps])
    assert np.all(values > 0)
    peak = Js[np.argmax(values)]
    assert MEAN_FIELD_JC <= peak <= ONSAGER_JC + 0.05, peak
    assert values[-1] < 0.25 * values.max() and values[0] < 0.25 * values.max()


def test_relative_error_at_small_coupling_matches_high_temperature_expansion():
    """J → 0, zero field: log Z ≈ N log 2 + E log cosh J, and mean field stays at μ = 0."""
    J, n = 0.05, 8
    (g,) = gap_vs_coupling(np.array([J]), np.zeros((n, n)))
    edges = 2 * n * (n - 1)
    assert g.elbo == pytest.approx(n * n * np.log(2), abs=1e-9)
    assert g.gap == pytest.approx(edges * np.log(np.cosh(J)), rel=0.02)

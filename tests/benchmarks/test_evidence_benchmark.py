"""benchmarks/evidence.py in quick mode: both backends report time, memory and agree."""

from __future__ import annotations

import pytest

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow


def test_quick_run_reports_seconds_and_memory():
    from benchmarks import evidence

    m = evidence.run(quick=True)
    for b in ("numpyro", "pyro"):
        assert m[f"{b}_seconds"] > 0 and 50 < m[f"{b}_peak_rss_mib"] < 8192
    assert m["n_images"] == 20 and m["k"] == 50
    # both backends build the same weights (varbayes.models.vae init_weights, seed 0): the same
    # estimate up to Monte-Carlo noise (measured: -44.97 and -44.96)
    assert -2000 < m["numpyro_log_px"] < 0
    assert abs(m["numpyro_log_px"] - m["pyro_log_px"]) < 0.5

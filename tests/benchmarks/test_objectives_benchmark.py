"""benchmarks/objectives.py runs in quick mode and reports every route and ratio."""

from __future__ import annotations

import pytest

#: end-to-end runs and compiles: not in `make test-fast`
pytestmark = pytest.mark.slow


def test_quick_run_reports_the_cost_of_each_objective_in_elbo_steps():
    from benchmarks import objectives

    m = objectives.run(quick=True)
    for backend in ("numpyro", "pyro"):
        for objective, k in objectives.ROUTES:
            name = f"{backend}_{objective}_k{k}"
            assert m[f"{name}_over_elbo"] == pytest.approx(
                m[f"{name}_ms"] / m[f"{backend}_elbo_ms"], rel=1e-2)
            assert m[f"{name}_per_sample"] == pytest.approx(m[f"{name}_over_elbo"] / k,
                                                            rel=1e-2)
    # 50 samples per datapoint cost more than 5
    assert m["numpyro_iwae_k50_ms"] > m["numpyro_iwae_k5_ms"]

"""benchmarks/ising.py runs in quick mode and reports every rate the issue asks for."""

from __future__ import annotations

import pytest

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow


def test_quick_run_reports_rates_and_ratios():
    from benchmarks import ising

    m = ising.run(quick=True)
    for key in ("jax_updates_per_ns", "torch_updates_per_ns", "numpy_updates_per_ns",
                "jax_over_numpy", "torch_over_numpy"):
        assert m[key] > 0, key
    assert m["jax_over_numpy"] == pytest.approx(m["jax_updates_per_ns"]
                                                / m["numpy_updates_per_ns"])
    assert m["torch_updates_per_ns"] == max(m["torch_1thread_updates_per_ns"],
                                            m["torch_default_threads_updates_per_ns"])


def test_torch_fast_path_matches_the_generic_sweep():
    import numpy as np
    import torch

    from varbayes.inference.ising.cavi import parallel_sweep, torch_parallel_sweeps
    from varbayes.models.ising.energy import make_couplings

    rng = np.random.default_rng(0)
    h = rng.normal(size=(7, 9))
    mu = np.tanh(h)
    expected = mu
    for _ in range(4):
        expected = parallel_sweep(expected, h, make_couplings(0.7, (7, 9)), 0.3)
    got = torch_parallel_sweeps(torch.from_numpy(mu.copy()), torch.from_numpy(h), 0.7, 0.3, 4)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)

"""benchmarks/vae.py runs in quick mode and reports the two ratios the issue asks for."""

from __future__ import annotations

import pytest


def test_quick_run_reports_ratios():
    from benchmarks import vae

    m = vae.run(quick=True)
    for key in ("jax_ms_per_step", "numpyro_ms_per_step", "torch_ms_per_step",
                "pyro_ms_per_step", "numpyro_over_jax", "pyro_over_torch",
                "pyro_svi_jit_meanfield_over_torch", "numpyro_seconds_per_mnist_epoch",
                "pyro_seconds_per_mnist_epoch"):
        assert m[key] > 0, key
    assert m["numpyro_over_jax"] == pytest.approx(m["numpyro_ms_per_step"]
                                                  / m["jax_ms_per_step"])
    assert m["pyro_over_torch"] == pytest.approx(m["pyro_ms_per_step"] / m["torch_ms_per_step"])

"""benchmarks/vae.py runs in quick mode and reports its ratios and the roofline."""

from __future__ import annotations

import pytest

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow


def test_quick_run_reports_ratios():
    from benchmarks import vae

    m = vae.run(quick=True)
    for key in ("jax_ms_per_step", "numpyro_ms_per_step", "torch_ms_per_step",
                "torch_best_ms_per_step", "pyro_ms_per_step", "numpyro_over_jax",
                "pyro_over_torch", "pyro_over_torch_best", "pyro_torchscript_over_torch",
                "step_gflop", "sgemm_gflops_torch", "sgemm_gflops_jax", "roofline_ms",
                "pyro_gflops", "jax_of_roofline",
                "pyro_svi_jit_meanfield_over_torch", "numpyro_seconds_per_mnist_epoch",
                "pyro_seconds_per_mnist_epoch"):
        assert m[key] > 0, key
    assert m["numpyro_over_jax"] == pytest.approx(m["numpyro_ms_per_step"]
                                                  / m["jax_ms_per_step"])
    assert m["pyro_over_torch"] == pytest.approx(m["pyro_ms_per_step"] / m["torch_ms_per_step"])
    assert m["pyro_over_torch_best"] == pytest.approx(m["pyro_ms_per_step"]
                                                      / m["torch_best_ms_per_step"])
    assert m["jax_gflops"] == pytest.approx(m["step_gflop"] / m["jax_ms_per_step"] * 1e3)


def test_gemm_shapes_count_every_product_of_a_step():
    from benchmarks import vae

    shapes = vae.gemm_shapes(quick=False, batch=128)
    # 784-400-20: encoder 784→400 (no input gradient), two 400→20 heads; decoder 20→400→784
    assert len(shapes) == 2 + 3 * 4
    flop = sum(2 * m * k * n for m, k, n in shapes)
    per_layer = 784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784
    assert flop == 2 * 128 * (3 * per_layer - 784 * 400)

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
    assert m["gflop"] > 0 and m["sgemm_gflops_jax"] > 0 and m["sgemm_gflops_torch"] > 0
    assert m["numpyro_over_roofline"] == pytest.approx(m["numpyro_seconds"]
                                                       / m["roofline_seconds"])
    # the hand-written JAX baseline computes the same estimate (its own draws)
    assert m["jax_hand_seconds"] > 0 and abs(m["jax_hand_log_px"] - m["numpyro_log_px"]) < 0.5
    assert m["numpyro_over_jax_hand"] == pytest.approx(m["numpyro_seconds"]
                                                       / m["jax_hand_seconds"])
    # AIS per transition, both backends, a bound close to IS's on this small VAE
    for b in ("numpyro", "pyro"):
        assert m[f"{b}_ais_seconds_per_transition"] > 0
        assert abs(m[f"{b}_ais_log_px"] - m["numpyro_log_px"]) < 1.0
        assert m[f"{b}_ais_over_roofline"] == pytest.approx(
            m[f"{b}_ais_seconds_per_transition"] / m["ais_roofline_seconds_per_transition"])


def test_gemm_count_of_the_full_run():
    from benchmarks import evidence

    gflop, shapes = evidence.gemms(quick=False, x_dim=784, rows=10_000)
    assert shapes == [(10_000, 50, 200), (10_000, 200, 200), (10_000, 200, 784)]
    decoder = 2 * 1000 * 5000 * (50 * 200 + 200 * 200 + 200 * 784)
    encoder = 2 * 1000 * (784 * 200 + 200 * 200 + 2 * 200 * 50)
    assert gflop == pytest.approx((decoder + encoder) / 1e9)


def test_gemm_count_of_one_ais_transition():
    from benchmarks import evidence

    gflop, shapes = evidence.ais_gemms(quick=False, x_dim=784)
    rows = (16 + 4) * 100  # 16 chains and 4 pilot chains per image, 100 images
    assert shapes == [(rows, 50, 200), (rows, 200, 200), (rows, 200, 784),
                      (rows, 784, 200), (rows, 200, 200), (rows, 200, 50)]
    # 10 leapfrog steps, each the decoder forward and its input gradient
    assert gflop == pytest.approx(10 * 2 * 2 * rows * (50 * 200 + 200 * 200 + 200 * 784) / 1e9)

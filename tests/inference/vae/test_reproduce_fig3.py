"""The pure parts of ``reproduce aevb-fig3``: the evaluation schedule and the comparison at
equal samples."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.vae.reproduce_fig3 import Curve, eval_times, value_at, verdicts


def _curve(samples, test, points):
    return Curve(samples, [t + 1 for t in test], test, [0.1] * len(test), [0.1] * len(test),
                 1.0, 1.0, points)


def test_eval_times_are_evenly_spaced_in_log_time_and_end_at_the_training_share():
    t = eval_times(400.0, 5)
    assert t == [25.0, 50.0, 100.0, 200.0, 400.0]
    assert eval_times(7.0, 1) == [7.0]


def test_value_at_interpolates_in_log_samples_and_refuses_to_extrapolate():
    c = _curve([1e3, 1e5], [-120.0, -100.0], [0.0])
    assert value_at(c, 1e4) == pytest.approx(-110.0)
    assert value_at(c, 1e3) == -120.0 and value_at(c, 1e5) == -100.0
    assert value_at(c, 999.0) is None and value_at(c, 1.01e5) is None


def test_verdicts_pair_the_methods_on_the_same_points():
    rng = np.random.default_rng(0)
    base = rng.normal(-100, 5, 50)
    curves = {("mnist", 1000, 3): {
        "AEVB": _curve([1e4, 1e6], [-110.0, -100.0], list(base + 1.0)),
        "wake-sleep": _curve([1e4, 1e6], [-115.0, -104.0], list(base - 2.0)),
        "MCEM": _curve([1e3, 1e5], [-120.0, -108.0], list(base + rng.normal(0, 0.1, 50)))}}
    (r,) = verdicts(curves)
    assert r["best_test"] == "AEVB" and r["common_samples"] == 1e5
    assert r["aevb_minus_wake_sleep"] == pytest.approx(3.0)
    assert r["aevb_minus_wake_sleep_se"] == pytest.approx(0.0, abs=1e-12)
    assert r["aevb_minus_mcem"] == pytest.approx(1.0, abs=0.05)
    assert 0 < r["aevb_minus_mcem_se"] < 0.05  # paired: far below the 5-nat spread of points
    assert r["aevb_test_at_common"] == pytest.approx(-105.0)
    assert r["mcem_test_at_common"] == -108.0
    assert r["aevb_gap"] == pytest.approx(1.0)

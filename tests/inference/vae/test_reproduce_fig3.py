"""The pure parts of ``reproduce aevb-fig3``: the evaluation schedule, the comparison at
equal samples and paired over the same points, and the report's verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from varbayes.inference.vae.reproduce_fig3 import (
    Curve,
    eval_times,
    report,
    segments,
    value_at,
    verdicts,
)


def _curve(samples, test, points):
    return Curve(samples, [t + 1 for t in test], test, [0.1] * len(test), [0.1] * len(test),
                 1.0, 1.0, points)


def test_eval_times_are_evenly_spaced_in_log_time_and_end_at_the_training_share():
    assert eval_times(400.0, 5) == [25.0, 50.0, 100.0, 200.0, 400.0]
    assert eval_times(7.0, 1) == [7.0]


def test_segments_skip_the_estimates_an_overrunning_segment_passed(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr("time.perf_counter", lambda: clock["t"])
    takes, calls = iter([25.0, 15.0, 41.0]), []

    def train(limit, resume):
        calls.append((limit, resume))
        clock["t"] += next(takes)

    spent = list(segments(80.0, 4, train))  # estimates due at 10, 20, 40 and 80 s
    assert spent == [25.0, 40.0, 81.0]  # the first call overran 10 and 20: one estimate
    assert calls == [(10.0, False), (15.0, True), (40.0, True)]


def test_value_at_interpolates_in_log_samples_and_refuses_to_extrapolate():
    c = _curve([1e3, 1e5], [-120.0, -100.0], [0.0])
    assert value_at(c, 1e4) == pytest.approx(-110.0)
    assert value_at(c, 1e3) == -120.0 and value_at(c, 1e5) == -100.0
    assert value_at(c, 999.0) is None and value_at(c, 1.01e5) is None


def _panel(aevb_shift, mcem_noise, rng):
    base = rng.normal(-100, 5, 50)
    return {"AEVB": _curve([1e4, 1e6], [-110.0, -100.0 + aevb_shift], list(base + aevb_shift)),
            "wake-sleep": _curve([2e5, 1e6], [-115.0, -104.0], list(base - 2.0)),
            "MCEM": _curve([3e4, 1e5], [-120.0, -108.0],
                           list(base + rng.normal(0, mcem_noise, 50)))}


def test_verdicts_pair_the_methods_on_the_same_points():
    (r,) = verdicts({("mnist", 1000, 3): _panel(1.0, 0.1, np.random.default_rng(0))})
    assert r["best_test"] == "AEVB" and r["common_samples"] == 1e5
    assert r["aevb_minus_wake_sleep"] == pytest.approx(3.0)
    assert r["aevb_minus_wake_sleep_se"] == pytest.approx(0.0, abs=1e-12)
    assert r["aevb_minus_mcem"] == pytest.approx(1.0, abs=0.05)
    assert 0 < r["aevb_minus_mcem_se"] < 0.05  # paired: far below the 5-nat spread of points
    assert r["aevb_vs_mcem"] == "AEVB ahead" and r["aevb_vs_wake_sleep"] == "AEVB ahead"
    assert r["aevb_test_at_common"] == pytest.approx(-105.0 + 0.5)
    assert r["mcem_test_at_common"] == -108.0 and r["wake_sleep_test_at_common"] is None
    assert r["aevb_gap"] == pytest.approx(1.0)
    assert r["aevb_fraction_of_paper_axis"] == pytest.approx(1e-2)


def test_the_report_says_where_a_claim_fails():
    rng = np.random.default_rng(1)
    rows = verdicts({("mnist", 1000, 3): _panel(-1.0, 0.1, rng),  # MCEM ahead of AEVB
                     ("mnist", 50000, 3): _panel(0.0, 3.0, rng)})  # AEVB - MCEM within noise
    rows[1]["aevb_samples"] = rows[1]["mcem_samples"] * 4
    text = report(rows, 3600.0, 3500.0)
    assert "in 0 of 2 panels" in text
    assert "(AEVB behind)" in text and "(within noise)" in text
    assert "wake-sleep —" in text  # its first estimate came after the common point
    assert "AEVB's lead over MCEM grows from the smallest to the largest" in text
    assert "AEVB evaluated 4× MCEM's samples" in text
    assert "every estimate is ≤ 0 nats" in text
    (one,) = verdicts({("digits", 200, 3): _panel(1.0, 0.1, rng)})
    assert "one training-set size only" in report([one], 60.0, 70.0)


def test_the_report_flags_a_positive_log_likelihood_of_binary_images():
    panel = _panel(1.0, 0.1, np.random.default_rng(2))
    panel["MCEM"] = panel["MCEM"]._replace(test=[-120.0, 696.0])
    (r,) = verdicts({("mnist", 1000, 3): panel})
    assert r["positive_estimates"] == ["MCEM test +696.00 at 1e+05 samples"]
    assert "FAILED" in report([r], 3600.0, 3500.0)

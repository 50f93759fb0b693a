"""Output plumbing: atomic writes, metrics.json, InferenceData netCDF round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from varbayes.inference.io import (
    atomic_write_bytes,
    load_inferencedata,
    read_metrics,
    save_inferencedata,
    write_metrics,
)
from varbayes.inference.mcmc.nuts import nuts
from varbayes.models.errors import VarbayesError

Y = np.random.default_rng(1).normal(1.5, 2.0, size=20)


def _normal_model(y):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    numpyro.sample("y", dist.Normal(mu, 2.0), obs=y)


@pytest.mark.slow
def test_netcdf_round_trip_and_bad_files(tmp_path):
    idata = nuts(_normal_model, Y, num_chains=1, num_warmup=50, num_samples=20,
                 progress_bar=False)
    path = save_inferencedata(idata, tmp_path / "post.nc")
    back = load_inferencedata(path)
    np.testing.assert_array_equal(back.posterior["mu"].values, idata.posterior["mu"].values)
    with pytest.raises(VarbayesError, match="no InferenceData file"):
        load_inferencedata(tmp_path / "missing.nc")
    (tmp_path / "bad.nc").write_bytes(b"garbage" * 10)
    with pytest.raises(VarbayesError, match="not a readable InferenceData"):
        load_inferencedata(tmp_path / "bad.nc")


def test_metrics_round_trip_non_finite_values_and_bad_files(tmp_path):
    write_metrics(tmp_path, {"a": np.float32(1.5), "nan": float("nan"), "inf": float("inf"),
                             "arr": np.arange(3)})
    m = read_metrics(tmp_path)
    assert m == {"a": 1.5, "nan": None, "inf": 1e308, "arr": [0, 1, 2]}
    with pytest.raises(VarbayesError, match=r"no metrics\.json"):
        read_metrics(tmp_path / "nowhere")
    (tmp_path / "metrics.json").write_text("{broken")
    with pytest.raises(VarbayesError, match="not valid JSON"):
        read_metrics(tmp_path)


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_bytes(tmp_path / "f.json", json.dumps({"x": 1}).encode())
    atomic_write_bytes(tmp_path / "f.json", b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert (tmp_path / "f.json").read_bytes() == b"{}"


@pytest.mark.slow
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_honour_the_umask(tmp_path, umask, mode):
    """Every output (json, png, npy, nc, npz checkpoint) gets 0666 less the umask, as an
    ordinary open() would: mkstemp alone made them 0600, unreadable by the group."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from varbayes.inference.io import save_array, save_figure
    from varbayes.inference.vi.checkpoint import save_checkpoint

    old = os.umask(umask)
    try:
        paths = [write_metrics(tmp_path, {"a": 1.0}),
                 save_figure(plt.figure(), tmp_path / "f.png"),
                 save_array(tmp_path / "a.npy", np.zeros(3)),
                 save_checkpoint(tmp_path / "c.npz", {"x": np.zeros(2)}, {"epoch": 1}),
                 atomic_write_bytes(tmp_path / "report.md", b"# r\n")]
        idata = nuts(_normal_model, Y, num_chains=1, num_warmup=20, num_samples=10,
                     progress_bar=False, predictive=False)
        paths.append(save_inferencedata(idata, tmp_path / "post.nc"))
    finally:
        os.umask(old)
    for p in paths:
        assert (p.stat().st_mode & 0o777) == mode, (p.name, oct(p.stat().st_mode))
    assert not list(tmp_path.glob(".*.tmp"))


def test_progress_in_a_log_is_plain_periodic_lines(monkeypatch):
    """Not a terminal: no carriage-return fragments, one line per period and one at the end,
    with the fields; a terminal gets one tqdm bar; --quiet prints nothing."""
    import io as stdio

    from varbayes.inference import io as vio

    class Clock:
        t = 0.0

    monkeypatch.setattr("time.monotonic", lambda: Clock.t)
    monkeypatch.setitem(vio._QUIET, "value", False)  # an earlier CLI test may have set it
    log = stdio.StringIO()
    bar = vio.Progress(100, "fit", stream=log, every=10.0)
    for _ in range(100):
        Clock.t += 0.5  # 50 s in all: a line at 10, 20, 30, 40 and 50 s
        bar.update()
        bar.note(epoch="1/1", objective=-25.3125)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 5, lines
    assert lines[0].startswith("fit: 20/100 (20%), epoch 1/1, objective -25.31, elapsed 0:10")
    assert lines[0].endswith("ETA 0:40") and lines[-1].startswith("fit: 100/100 (100%)")
    timed = stdio.StringIO()  # a time limit sooner than the count's end replaces the ETA
    bar = vio.Progress(10_000, "fit", stream=timed, every=10.0, time_limit=30.0)
    for _ in range(40):
        Clock.t += 0.5
        bar.update()
    assert timed.getvalue().splitlines()[0].endswith("elapsed 0:10, time limit in 0:20")
    vio.set_quiet(True)
    try:
        quiet = stdio.StringIO()
        with vio.Progress(5, "fit", stream=quiet, every=0.0) as q:
            q.update(5)
        assert quiet.getvalue() == ""
    finally:
        vio.set_quiet(False)

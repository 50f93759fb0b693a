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

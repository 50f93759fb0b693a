"""``varbayes mcmc``: tiny NUTS runs in both backends, outputs, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference.cli import main
from varbayes.inference.io import load_inferencedata

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow

TINY = ["--n-train", "100", "--n-test", "10", "--hidden", "8", "--batch-size", "50",
        "--latent", "2", "--epochs", "1", "--quiet"]
FAST = ["--chains", "1", "--warmup", "30", "--samples", "30", "--n-data", "2", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mcmc")
    out = {}
    for backend in ("numpyro", "pyro"):
        out[backend] = root / backend
        assert main(["vae", "train", "--backend", backend, "--out", str(out[backend]),
                     *TINY]) == 0
    return out


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_mcmc_latent_writes_inferencedata_metrics_and_plots(runs, backend, tmp_path):
    out = tmp_path / "m"
    assert main(["mcmc", str(runs[backend]), "--out", str(out), *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == backend and m["n_data"] == 2 and m["latent"] == 2
    assert isinstance(m["gate_passed"], bool) and m["divergences"] >= 0
    assert m["log_px_method"] == "quadrature"
    assert (m["chain_method"], m["devices"]) == ("sequential", 1)  # one chain, one device
    # the gap identities and signs: q* is fitted, so it is no worse than the encoder
    assert m["log_px"] >= m["elbo_optimal"] - 1e-3 >= m["elbo_amortized"] - 2e-3
    assert np.isclose(m["inference_gap"], m["approximation_gap"] + m["amortization_gap"])
    idata = load_inferencedata(out / "posterior.nc")
    assert idata.posterior["z"].shape == (1, 30, 2, 2)
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(
        idata.groups())
    for name in ("trace", "rank", "pair", "energy", "forest", "latent_overlay"):
        assert (out / f"{name}.png").stat().st_size > 1000, name


@pytest.mark.parametrize("argv, match", [
    (["--samples", "0"], "--samples must be >= 1"),
    (["--target", "weights"], "train with 'varbayes vae train --bayesian'"),
    (["--n-data", "0"], "--n-data must be >= 1"),
])
def test_bad_input_one_line(runs, argv, match, tmp_path, capsys):
    assert main(["mcmc", str(runs["numpyro"]), "--out", str(tmp_path), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err


def test_wrong_run_folders(tmp_path, capsys):
    assert main(["mcmc", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["mcmc", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err
    (tmp_path / "checkpoint.npz").write_bytes(b"not a checkpoint")
    assert main(["mcmc", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint" in err and "\n" not in err


def test_bayesian_runs_are_recognized():
    from varbayes.inference.vae.run import is_bayesian

    assert is_bayesian({"meta": {"vae": {}, "bayes": {"prior_scale": 1.0}}})
    assert not is_bayesian({"meta": {"vae": {}, "run": {}}})


@pytest.fixture(scope="module")
def bayes_run(tmp_path_factory) -> Path:
    """A tiny Pyro Bayesian-decoder run: --target weights goes through the NumPyro twin."""
    out = tmp_path_factory.mktemp("mcmc-bayes") / "run"
    assert main(["vae", "train", "--bayesian", "--backend", "pyro", "--n-train", "12",
                 "--n-test", "12", "--hidden", "3", "--latent", "2", "--batch-size", "12",
                 "--epochs", "2", "--init-sigma", "0.05", "--out", str(out), "--quiet"]) == 0
    return out


def test_mcmc_weights_on_a_bayesian_run(bayes_run, tmp_path, capsys):
    from varbayes.inference.vae.run import load_run
    from varbayes.inference.vi.checkpoint import load_checkpoint

    out = tmp_path / "w"
    assert main(["mcmc", str(bayes_run), "--target", "weights", "--chains", "1", "--warmup",
                 "30", "--samples", "40", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["target"] == "weights" and m["n_images"] == 12
    assert (m["chain_method"], m["devices"]) == ("sequential", 1)
    assert m["n_weights"] == 2 * 3 + 3 + 3 * 64 + 64
    assert m["out_bias_sd_ratio_median"] > 0 and 0 <= m["predictive_pixel_abs_diff"] < 1
    nuts = load_inferencedata(out / "posterior.nc")
    assert nuts.posterior["theta.dec.out.bias"].shape == (1, 40, 64)
    assert nuts.posterior["z"].shape == (1, 40, 12, 2)
    # the SVI draws are the run's own q(θ): their means sit at its μ within MC error
    svi = load_inferencedata(out / "svi_posterior.nc")
    arrays, _ = load_checkpoint(bayes_run / "checkpoint.npz")
    sigma = load_run(bayes_run, with_data=False).sigma["dec.out.bias"]
    mu = arrays["export/dec.out.bias"]
    draws = svi.posterior["theta.dec.out.bias"].values.reshape(-1, 64)
    assert np.all(np.abs(draws.mean(0) - mu) < 5 * sigma / np.sqrt(40) + 1e-6)
    for name in ("trace", "rank", "forest", "energy", "weights_marginals"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    assert main(["mcmc", str(bayes_run), "--out", str(tmp_path / "l"), "--quiet"]) == 2
    assert "use --target weights" in capsys.readouterr().err


def test_mcmc_weights_refuses_a_large_run(tmp_path, capsys):
    run = tmp_path / "big"
    assert main(["vae", "train", "--bayesian", "--n-train", "501", "--n-test", "10",
                 "--hidden", "3", "--latent", "2", "--epochs", "1", "--out", str(run),
                 "--quiet"]) == 0
    assert main(["mcmc", str(run), "--target", "weights", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on 501 images" in err and "--n-train" in err and "\n" not in err

"""``varbayes vae train --bayesian`` with tiny arguments: outputs, metrics, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference.cli import main

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow

TINY = ["--n-train", "200", "--n-test", "60", "--hidden", "8", "--batch-size", "50",
        "--latent", "2", "--quiet"]


def _metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


@pytest.fixture(scope="module")
def bayes_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bvae") / "run"
    assert main(["vae", "train", "--bayesian", "--prior-scale", "0.5", "--epochs", "6",
                 "--lr", "0.01", "--out", str(out), *TINY]) == 0
    return out


def test_bayesian_train_outputs(bayes_run):
    m = _metrics(bayes_run)
    from varbayes.inference.vae.run import load_run
    from varbayes.models.bayesian_vae.config import kl_weights

    run = load_run(bayes_run)
    sigma = run.sigma
    loc = {k: v for k, v in run.mod.weights(run.vae).items() if k in sigma}
    assert m["kl_weights"] == pytest.approx(kl_weights(loc, sigma, 0.5), rel=1e-6)
    assert m["kl_weights"] > 0 and m["prior_scale"] == 0.5
    # the ELBOs are local per-datapoint bounds; KL(q(θ)‖p(θ)) enters only train_bound
    assert m["train_bound"] == pytest.approx(m["train_elbo"] - m["kl_weights"] / 200)
    assert m["elbo_gap"] == pytest.approx(m["train_elbo"] - m["test_elbo"])
    assert m["kl_weights"] > 0 and -100 < m["test_elbo"] < 0  # 8×8 digits: tens of nats
    assert 0 <= m["epistemic_variance_mean"] < m["aleatoric_variance_mean"] <= 0.25
    for fig in ("elbo_curves", "reconstructions", "samples", "predictive_samples",
                "uncertainty", "weight_sigma"):
        assert (bayes_run / f"{fig}.png").stat().st_size > 1000, fig
    u = np.load(bayes_run / "uncertainty.npz")
    total = u["mean"] * (1 - u["mean"])  # law of total variance, per pixel
    np.testing.assert_allclose(u["epistemic"] + u["aleatoric"], total, atol=1e-9)


def test_sample_and_reconstruct_use_the_posterior_mean(bayes_run, tmp_path):
    assert main(["vae", "sample", str(bayes_run), "--n", "4", "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    assert main(["vae", "reconstruct", str(bayes_run), "--n", "4",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert _metrics(tmp_path / "r")["n_test"] == 60


@pytest.mark.parametrize("argv, words", [
    (["--prior-scale", "0"], "--prior-scale must be > 0"),
    (["--prior-scale", "-2"], "--prior-scale must be > 0"),
    (["--init-sigma", "0"], "--init-sigma must be > 0"),
    (["--weight-decay", "1"], "--weight-decay 1.0 and --bayesian"),
    (["--backend", "pyro", "--particles", "2"], "--particles 1"),
])
def test_bad_input_one_line(argv, words, tmp_path, capsys):
    capsys.readouterr()
    assert main(["vae", "train", "--bayesian", "--epochs", "1", "--out", str(tmp_path / "x"),
                 *TINY, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err

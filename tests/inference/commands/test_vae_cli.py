"""``varbayes vae``: every subcommand with tiny arguments, resume, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from varbayes.inference.cli import main

#: end-to-end runs, compiles and benchmarks: not in `make test-fast`
pytestmark = pytest.mark.slow

TINY = ["--n-train", "200", "--n-test", "60", "--hidden", "16", "--batch-size", "50",
        "--quiet"]


def _metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


def _error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def latent2_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vae") / "run"
    assert main(["vae", "train", "--latent", "2", "--epochs", "2", "--out", str(out),
                 *TINY]) == 0
    return out


def test_train_writes_metrics_and_figures(latent2_run):
    m = _metrics(latent2_run)
    for key in ("test_elbo", "best_test_elbo", "train_elbo", "epochs", "seconds_per_epoch",
                "n_params"):
        assert key in m, key
    assert m["epochs"] == 2 and m["best_test_elbo"] >= m["test_elbo"]
    assert -64 * np.log(2) * 2 < m["test_elbo"] < 0  # nats per 64-pixel digit
    assert m["n_params"] == (64 * 16 + 16) + 2 * (16 * 2 + 2) + (2 * 16 + 16) + (16 * 64 + 64)
    for fig in ("elbo_curves", "reconstructions", "samples", "manifold", "latent_means"):
        assert (latent2_run / f"{fig}.png").stat().st_size > 1000, fig


def test_sample_and_reconstruct(latent2_run, tmp_path, capsys):
    assert main(["vae", "sample", str(latent2_run), "--out", str(tmp_path / "s"), "--n", "9",
                 "--quiet"]) == 0
    assert _metrics(tmp_path / "s")["n_samples"] == 9
    samples = np.load(tmp_path / "s" / "samples.npy")
    assert samples.shape == (9, 64) and (samples >= 0).all() and (samples <= 1).all()
    assert main(["vae", "reconstruct", str(latent2_run), "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    m = _metrics(tmp_path / "r")
    # the numpy estimator-B ELBO agrees with the one fit() logged, within MC error
    assert abs(m["test_elbo"] - _metrics(latent2_run)["test_elbo"]) < 5 * m["test_elbo_stderr"]
    assert (tmp_path / "r" / "reconstructions.png").is_file()
    assert "test ELBO" in capsys.readouterr().out


def test_resume_via_cli_and_mismatches(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["vae", "train", "--backend", "pyro", "--elbo", "trace", "--latent", "3",
            "--out", str(out), *TINY]
    assert main([*args, "--epochs", "1"]) == 0
    assert "already holds a checkpoint.npz" in _error([*args, "--epochs", "2"], capsys)
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert _metrics(out)["epochs"] == 2
    err = _error(["vae", "train", "--latent", "3", "--out", str(out), *TINY, "--epochs", "3",
                  "--resume"], capsys)
    assert "pyro backend but this run uses numpyro" in err
    err = _error([*args, "--latent", "4", "--epochs", "3", "--resume"], capsys)
    assert "another configuration" in err
    assert "no checkpoint.npz" in _error(["vae", "train", "--out", str(tmp_path / "new"),
                                          *TINY, "--resume"], capsys)


def _export(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "checkpoint.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k.startswith("a/export/")}


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_resume_via_cli_is_bit_identical(backend, tmp_path):
    base = ["vae", "train", "--backend", backend, "--latent", "3", *TINY]
    assert main([*base, "--epochs", "2", "--out", str(tmp_path / "full")]) == 0
    assert main([*base, "--epochs", "1", "--out", str(tmp_path / "part")]) == 0
    assert main([*base, "--epochs", "2", "--resume", "--out", str(tmp_path / "part")]) == 0
    full, part = _export(tmp_path / "full"), _export(tmp_path / "part")
    assert full.keys() == part.keys() and len(full) == 10
    for k in full:
        np.testing.assert_array_equal(full[k], part[k], err_msg=k)
    assert _metrics(tmp_path / "full")["test_elbo"] == _metrics(tmp_path / "part")["test_elbo"]


def test_binarization_modes():
    from varbayes.inference.vae.run import load_run_data

    def binary(a):
        return bool(np.isin(a, (0.0, 1.0)).all())

    dyn = load_run_data("digits", None, "bernoulli", "auto", 100, 50, seed=0)
    assert dyn.binarize == "dynamic" and not binary(dyn.x_train)  # a fresh draw per batch
    assert binary(dyn.x_test) and binary(dyn.x_train_eval)        # drawn once, seeded
    again = load_run_data("digits", None, "bernoulli", "dynamic", 100, 50, seed=0)
    np.testing.assert_array_equal(dyn.x_test, again.x_test)
    static = load_run_data("digits", None, "bernoulli", "static", 100, 50, seed=0)
    assert static.binarize == "static" and binary(static.x_train) and binary(static.x_test)
    grey = load_run_data("digits", None, "gaussian", "auto", 100, 50, seed=0)
    assert grey.binarize == "none" and not binary(grey.x_test)
    assert load_run_data("digits", None, "bernoulli", "none", 100, 50, 0).binarize == "none"


def test_corrupt_checkpoint_and_missing_run(latent2_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.npz").write_bytes(
        (latent2_run / "checkpoint.npz").read_bytes()[:1000])
    assert "corrupt" in _error(["vae", "sample", str(bad), "--out", str(tmp_path / "o")],
                               capsys)
    assert "does not exist" in _error(["vae", "reconstruct", str(tmp_path / "nope"), "--out",
                                       str(tmp_path / "o")], capsys)


@pytest.mark.parametrize("argv, match", [
    (["--latent", "0"], "--latent must be > 0"),
    (["--latent", "-2"], "--latent must be > 0"),
    (["--hidden", "a,b"], "--hidden"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-1"], "--lr"),
    (["--decoder", "gaussian", "--binarize", "dynamic"], "Gaussian decoder"),
    (["--torch-threads", "0"], "--torch-threads"),
    (["--n-train", "0"], "--n-train"),
    (["--is-every", "-1"], "--is-every must be >= 0"),
    (["--is-particles", "0"], "--is-particles must be >= 1"),
    (["--objective", "iwae", "--particles", "0"], "--particles must be >= 1"),
    (["--objective", "dreg", "--bayesian"], "train a Bayesian decoder with --objective elbo"),
    (["--objective", "rws"], "--objective rws weights the guide's K draws"),
    (["--objective", "wake-sleep", "--bayesian"], "with --objective elbo"),
])
def test_bad_input_one_line(argv, match, tmp_path, capsys):
    err = _error(["vae", "train", "--out", str(tmp_path / "x"), *TINY, *argv], capsys)
    assert match in err


def test_label_cvae_and_inpaint(tmp_path, capsys):
    lab = tmp_path / "label"
    assert main(["vae", "train", "--conditional", "label", "--epochs", "1", "--out", str(lab),
                 "--backend", "pyro", *TINY]) == 0
    assert main(["vae", "sample", str(lab), "--out", str(tmp_path / "ls"), "--n", "20",
                 "--quiet"]) == 0
    assert np.load(tmp_path / "ls" / "samples.npy").shape == (20, 64)  # 2 per class
    assert "--conditional observed" in _error(["vae", "inpaint", str(lab), "--out",
                                                str(tmp_path / "li")], capsys)
    assert "--k must be >= 1" in _error(["vae", "inpaint", str(lab), "--k", "0", "--out",
                                         str(tmp_path / "li")], capsys)
    obs = tmp_path / "obs"
    assert main(["vae", "train", "--conditional", "observed", "--mask", "lower", "--epochs",
                 "2", "--out", str(obs), *TINY]) == 0
    assert main(["vae", "inpaint", str(obs), "--out", str(tmp_path / "oi"), "--k", "50",
                 "--n", "6", "--quiet"]) == 0
    m = _metrics(tmp_path / "oi")
    assert m["masked_pixels"] == 32 and m["k"] == 50 and m["n_images"] == 60
    assert -32 * np.log(2) * 2 < m["masked_log_likelihood"] < 0
    assert (tmp_path / "oi" / "inpainting.png").is_file()


def test_gaussian_decoder_trains_on_frey_face(shared_data, tmp_path):
    if not (shared_data / "frey-face").is_dir():
        pytest.skip("frey-face not in the shared data")
    out = tmp_path / "frey"
    assert main(["vae", "train", "--dataset", "frey-face", "--data-dir", str(shared_data),
                 "--epochs", "4", "--latent", "5", "--hidden", "100", "--n-train", "1000",
                 "--n-test", "200", "--lr", "3e-3", "--out", str(out), "--quiet"]) == 0
    ckpt = np.load(out / "checkpoint.npz")
    history = json.loads(ckpt["header"].tobytes())["history"]["test_elbo"]
    assert history[-1] > history[0] + 20, history  # nats per 560-pixel face
    assert (out / "samples.png").is_file()


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_an_importance_weighted_run_records_its_objective_and_the_is_estimate(backend,
                                                                             tmp_path):
    out = tmp_path / "iwae"
    assert main(["vae", "train", "--objective", "dreg", "--particles", "3", "--is-every", "1",
                 "--is-particles", "20", "--epochs", "2", "--backend", backend,
                 "--out", str(out), *TINY]) == 0
    m = _metrics(out)
    assert m["objective"] == "dreg" and m["particles"] == 3 and m["is_epoch"] == 2
    assert m["is_points"] == 60 and m["is_particles"] == 20
    assert m["test_is"] > m["test_elbo"]  # the 20-sample bound of the same weights
    assert m["decoder_evals_per_epoch"] == 200 * 3 and m["epochs_per_second"] > 0
    assert m["load_average"] >= 0
    assert (out / "elbo_curves.png").stat().st_size > 1000


@pytest.mark.parametrize("objective, K, evals", [("wake-sleep", 1, 2), ("rws", 3, 3)])
def test_a_wake_sleep_run_trains_and_counts_the_sleep_phase(objective, K, evals, tmp_path):
    out = tmp_path / objective
    assert main(["vae", "train", "--objective", objective, "--particles", str(K),
                 "--epochs", "3", "--lr", "3e-3", "--out", str(out), *TINY]) == 0
    m = _metrics(out)
    assert m["objective"] == objective and m["particles"] == K
    assert m["decoder_evals_per_epoch"] == 200 * evals  # K wake draws (+ one fantasy)
    ckpt = np.load(out / "checkpoint.npz")
    history = json.loads(ckpt["header"].tobytes())["history"]
    assert history["test_elbo"][-1] > history["test_elbo"][0], history["test_elbo"]


TINY2 = ["--n-train", "200", "--n-test", "40", "--batch-size", "50", "--quiet"]


@pytest.fixture(scope="module")
def two_layer_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vae2") / "run"
    assert main(["vae", "train", "--stochastic-layers", "2", "--objective", "iwae",
                 "--particles", "3", "--epochs", "2", "--is-every", "2", "--is-particles", "20",
                 "--out", str(out), *TINY2]) == 0
    return out


def test_a_two_layer_run_trains_the_paper_architecture(two_layer_run):
    from varbayes.models.vae2 import VAE2Config, n_params

    m = _metrics(two_layer_run)
    assert m["stochastic_layers"] == 2 and m["latent"] == [100, 50]
    assert m["n_params"] == n_params(VAE2Config(x_dim=64))
    assert m["test_is"] > m["test_elbo"]
    for fig in ("elbo_curves", "reconstructions", "samples"):
        assert (two_layer_run / f"{fig}.png").stat().st_size > 1000, fig


def test_evidence_reads_a_two_layer_run_and_the_one_layer_commands_refuse_it(
        two_layer_run, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evidence", str(two_layer_run), "--estimators", "elbo,is,ais", "--k", "50",
                 "--ais-steps", "10", "--ais-chains", "2", "--ais-init", "guide",
                 "--out", str(out), "--quiet"]) == 0
    m = _metrics(out)
    assert m["n_data"] == 40 and m["is"] > m["elbo"]
    assert abs(m["ais"] - m["is"]) < 5.0
    assert "need(s) one stochastic layer" in _error(
        ["evidence", str(two_layer_run), "--estimators", "is,hmc", "--out", str(tmp_path / "h"),
         "--quiet"], capsys)
    for cmd in ("sample", "reconstruct", "inpaint"):
        assert "two stochastic layers" in _error(
            ["vae", cmd, str(two_layer_run), "--out", str(tmp_path / cmd)], capsys)


def test_two_layers_train_the_trace_elbo_and_refuse_the_analytic_kl(two_layer_run, tmp_path,
                                                                    capsys):
    header = json.loads(np.load(two_layer_run / "checkpoint.npz")["header"].tobytes())
    assert header["options"]["elbo"] == "trace"  # q(z2|z1): no closed-form KL per latent
    err = _error(["vae", "train", "--stochastic-layers", "2", "--elbo", "meanfield", "--out",
                  str(tmp_path / "x"), *TINY2], capsys)
    assert "--elbo meanfield" in err and "use --elbo trace" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("flag", [["--latent", "5"], ["--hidden", "16"],
                                  ["--conditional", "label"], ["--bayesian"]])
def test_two_layers_refuse_the_one_layer_options(flag, tmp_path, capsys):
    err = _error(["vae", "train", "--stochastic-layers", "2", *flag, "--out",
                  str(tmp_path / "x"), *TINY2], capsys)
    assert f"{flag[0]} is for one stochastic layer" in err

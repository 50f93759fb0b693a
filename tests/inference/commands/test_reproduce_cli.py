"""``varbayes reproduce aevb-fig2`` and ``aevb-fig3`` on digits with tiny budgets, and their
one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from varbayes.inference.cli import main


@pytest.mark.slow  # end to end: not in `make test-fast`
def test_fig2_writes_the_figure_the_report_and_every_curve(tmp_path):
    out = tmp_path / "fig2"
    assert main(["reproduce", "aevb-fig2", "--datasets", "digits", "--latents", "2,3",
                 "--budget", "40", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["experiment"] == "aevb-fig2" and m["seconds_per_curve"] == 10.0
    for z in (2, 3):
        for method, key in (("AEVB", "aevb"), ("wake-sleep", "wake_sleep")):
            run = out / "runs" / f"digits-z{z}-{method}"
            r = json.loads((run / "metrics.json").read_text())
            assert r["objective"] == ("elbo" if method == "AEVB" else "wake-sleep")
            header = json.loads(np.load(run / "checkpoint.npz")["header"].tobytes())
            assert r["latent"] == z and header["meta"]["vae"]["hidden"] == [200]
            assert header["options"]["optimizer"] == "adagrad"
            assert m[f"digits_z{z}_{key}_test"] == pytest.approx(r["test_elbo"])
            # every epoch evaluates 14 full minibatches of 1,437 points
            assert m[f"digits_z{z}_{key}_samples"] == 1400 * r["epochs"]
        assert 0 < m[f"digits_z{z}_fraction_of_paper_axis"] < 1e-2
    report = (out / "report.md").read_text()
    assert report.count("| digits |") == 2 and "AEVB converges faster" in report
    assert (out / "aevb_fig2.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv, match", [
    (["--latents", "0"], "--latents must be >= 1"),
    (["--latents", "a"], "--latents must be comma-separated integers"),
    (["--datasets", "cifar"], "'cifar' is not one of"),
    (["--budget", "0"], "--budget must be a finite number of seconds > 0"),
    (["--budget", "inf"], "--budget must be a finite number of seconds > 0"),
    (["--lr", "inf"], "--lr must be finite and > 0"),
    (["--datasets", "digits", "--latents", "3,3"], "must not repeat a value"),
])
def test_bad_input_one_line(argv, match, tmp_path, capsys):
    assert main(["reproduce", "aevb-fig2", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # end to end: not in `make test-fast`
def test_fig3_scores_all_three_methods_on_the_same_points(tmp_path):
    out = tmp_path / "fig3"
    assert main(["reproduce", "aevb-fig3", "--datasets", "digits", "--train-sizes", "200",
                 "--budget", "30", "--evals", "2", "--n-eval", "20", "--out", str(out),
                 "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["experiment"] == "aevb-fig3" and m["seconds_per_curve"] == 10.0
    curves = {c["method"]: c for c in json.loads((out / "curves.json").read_text())}
    assert sorted(curves) == ["AEVB", "MCEM", "wake-sleep"]
    for c in curves.values():
        assert 1 <= len(c["samples"]) <= 2 and len(c["final_test_points"]) == 20
        # log p(x) of 64 binary pixels: below 0 and above the uniform model's 64 log(1/2)
        assert -64 * np.log(2) < c["test"][-1] < 0 and -64 * np.log(2) < c["train"][-1] < 0
    for method in ("AEVB", "wake-sleep"):
        run = out / "runs" / f"digits-n200-z3-{method}"
        r = json.loads((run / "metrics.json").read_text())
        header = json.loads(np.load(run / "checkpoint.npz")["header"].tobytes())
        assert r["n_train"] == 200 and r["n_test"] == 20 and r["latent"] == 3
        assert header["meta"]["vae"]["hidden"] == [100]
        assert header["meta"]["vae"]["prior_precision"] == 1.0
        assert header["options"]["optimizer"] == "adagrad"
        h = header["history"]
        # training raised the bound (on a loaded machine the budget may buy one epoch)
        assert len(h["train_elbo"]) == 1 or h["train_elbo"][-1] > h["train_elbo"][0]
        # the run's test set is the 20 scored points: the estimate of log p(x) lies near the
        # run's own ELBO there, which bounds log p(x) from below (both are noisy on 20
        # points: a single-draw ELBO, and 50 held-out draws per point for the estimate)
        assert r["test_elbo"] - 2 < curves[method]["test"][-1] < r["test_elbo"] + 10
    mcem = json.loads((out / "runs" / "digits-n200-z3-MCEM" / "history.json").read_text())
    assert len(mcem["objective"]) == 1 or mcem["objective"][-1] > mcem["objective"][0]
    assert 0.5 < mcem["accept"][-1] <= 1.0
    report = (out / "report.md").read_text()
    assert report.count("| digits | 200 | 3 |") == 1
    assert "one training-set size only" in report  # claim 3 needs two sizes
    assert (out / "aevb_fig3.png").stat().st_size > 10_000


@pytest.mark.parametrize("experiment, argv, match", [
    ("aevb-fig2", ["--train-sizes", "100"], "--train-sizes is an option of aevb-fig3 only"),
    ("aevb-fig3", ["--datasets", "frey-face"], "figure 3 is on binary images"),
    ("aevb-fig3", ["--datasets", "digits", "--train-sizes", "50"],
     "--train-sizes: 50 is not in [100, 1437]"),
    ("aevb-fig3", ["--datasets", "digits", "--train-sizes", "5000"], "is not in [100, 1437]"),
    ("aevb-fig3", ["--evals", "0"], "--evals must be in [1, 12]"),
    ("aevb-fig3", ["--budget", "inf"], "--budget must be a finite number"),
    ("aevb-fig3", ["--datasets", "digits", "--train-sizes", "200,200"],
     "--train-sizes repeats a value"),
    ("aevb-fig3", ["--datasets", "digits", "--train-sizes", "200", "--n-eval", "361"],
     "--n-eval 361 is more than digits's 360 test points"),
    ("aevb-fig3", ["--datasets", "digits", "--train-sizes", "200", "--n-eval", "300"],
     "--n-eval 300 is more than the 200 training points"),
    ("aevb-fig3", ["--n-eval", "1"], "--n-eval must be >= 2"),
    ("aevb-fig3", ["--latents", "0", "--datasets", "digits"], "--latents must be >= 1"),
])
def test_fig3_bad_input_one_line(experiment, argv, match, tmp_path, capsys):
    assert main(["reproduce", experiment, "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "x").exists()
